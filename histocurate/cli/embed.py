"""`histocurate embed`: tile features with an encoder, one file per slide (resumable)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    console,
    exit_for_outcomes,
    flag_overrides,
    progress_bar,
    use_prefect,
)
from histocurate.errors import UserInputError

_WEIGHT_FIELDS = {"phikon": "phikon_weights", "h0-mini": "h0_mini_weights"}


@app.command()
def embed(
    workspace: WorkspaceOption = Path("."),
    encoder: Annotated[
        str | None,
        typer.Option(help="builtin (default, no weights), phikon, h0-mini or timm:<model name>."),
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
        field = _WEIGHT_FIELDS.get(chosen, "timm_weights" if chosen.startswith("timm:") else "")
        if not field:
            raise UserInputError(f"--weights: encoder {chosen!r} takes no weights")
        section[field] = str(weights.expanduser().resolve())
    overrides = flag_overrides({"features": section})
    config = config_for(workspace, overrides)
    slide_ids = [s.strip() for s in slides.split(",") if s.strip()] if slides else None
    address = config.features.dask_address
    distributed = bool(address or dask_workers)
    if distributed and prefect is False:
        raise UserInputError(
            "--dask-address / --dask-workers run through Prefect: drop --no-prefect"
        )
    started = time.perf_counter()
    if distributed or use_prefect(prefect):
        from flows.embed import run_embed_flow

        raw = run_embed_flow(
            str(config.workspace),
            overrides=overrides,
            force=force,
            slide_ids=slide_ids,
            dask_address=address,
            dask_workers=dask_workers,
        )
        from histocurate.features.extract import SlideOutcome

        outcomes = [SlideOutcome(**o) for o in raw]
    else:
        outcomes = _run_here(config, force=force, slide_ids=slide_ids)
    _summary(outcomes, config.features.encoder, time.perf_counter() - started)
    exit_for_outcomes(outcomes)


def _run_here(config: Any, *, force: bool, slide_ids: list[str] | None) -> list[Any]:
    from histocurate.features.stage import embed_workspace

    bar = progress_bar()
    task = bar.add_task("embedding", total=None)

    def on_plan(plan: Any) -> None:  # the bar shows once the encoder and tiles are ready
        bar.update(task, total=plan.tiles_pending)
        bar.start()

    try:
        return embed_workspace(
            config,
            force=force,
            slide_ids=slide_ids,
            progress=lambda n: bar.advance(task, n),
            on_plan=on_plan,
        )
    finally:
        bar.stop()


def _summary(outcomes: list[Any], encoder: str, seconds: float) -> None:
    table = Table("slide", "status", "tiles", "seconds", title=f"embed ({encoder})")
    for o in outcomes:
        table.add_row(o.slide_id, o.status, str(o.tiles), f"{o.seconds:.1f}")
    console.print(table)
    done = [o for o in outcomes if o.status == "done"]
    tiles, busy = sum(o.tiles for o in done), sum(o.seconds for o in done)
    rate = f", {tiles / busy:.1f} tiles/s while embedding" if busy > 0 and tiles else ""
    console.print(f"{tiles} tiles embedded with {encoder} in {seconds:.1f} s{rate}")
