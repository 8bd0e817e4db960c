"""`histocurate embed`: tile features with an encoder, one file per slide (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from histocurate.cli.base import (
    PrefectOption,
    RichProgress,
    WorkspaceOption,
    app,
    config_for,
    finish_run,
    flag_overrides,
    use_prefect,
)
from histocurate.errors import UserInputError
from histocurate.features.registry import ENCODER_NAMES, weights_field


@app.command()
def embed(
    workspace: WorkspaceOption = Path("."),
    encoder: Annotated[
        str | None,
        typer.Option(help=f"{', '.join(ENCODER_NAMES)} (default builtin: no weights)."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="Weights of the encoder: file, model folder or Hugging Face cache."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (GPU when present), cpu, cuda, cuda:1.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Tiles per batch (64).")] = None,
    num_workers: Annotated[
        int | None, typer.Option(min=0, help="Data-loader processes reading tiles (2).")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (bf16 on GPU), bf16, fp16 or fp32.")
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(help="Dask scheduler (tcp://host:port): slides run there, via Prefect."),
    ] = None,
    dask_workers: Annotated[
        int | None,
        typer.Option(min=1, help="Start a local Dask cluster of this many workers, via Prefect."),
    ] = None,
    slides: Annotated[
        str | None, typer.Option(help="Only these slides (comma-separated ids).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute slides already done.")] = False,
    prefect: PrefectOption = None,
) -> None:
    """Compute tile features (features/<encoder>/<slide>.parquet) from the tiles table."""
    name = encoder
    section: dict[str, Any] = {
        "encoder": name,
        "device": device,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "precision": precision,
        "dask_address": dask_address,
    }
    if weights is not None:
        chosen = name or config_for(workspace).features.encoder
        section[weights_field(chosen)] = str(weights.expanduser().resolve())
    overrides = flag_overrides({"features": section})
    config = config_for(workspace, overrides)
    slide_ids = [s.strip() for s in slides.split(",") if s.strip()] if slides else None
    address = config.features.dask_address
    distributed = bool(address or dask_workers)
    if distributed and prefect is False:
        raise UserInputError(
            "--dask-address / --dask-workers run through Prefect: drop --no-prefect"
        )
    if distributed or use_prefect(prefect):
        from flows._stage import run_flow
        from flows.embed import embed_flow_on

        run = run_flow(
            embed_flow_on(dask_address=address, dask_workers=dask_workers),
            workspace=str(config.workspace),
            overrides=overrides,
            force=force,
            slide_ids=slide_ids,
        )
    else:
        from histocurate.features.stage import run_embed

        with RichProgress() as progress:
            run = run_embed(config, progress=progress, force=force, slide_ids=slide_ids)
    finish_run(run)
