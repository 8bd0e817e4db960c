"""`histocurate select`: choose the tiles of an indication to annotate (three arms)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from data_schema.selection import ARMS
from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    flag_overrides,
    print_report,
    run_stage,
)
from histocurate.errors import UserInputError


def _split(
    value: str | None, *, what: str, allowed: tuple[str, ...] | None = None
) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if allowed is not None and v not in allowed]
    if bad or not items:
        raise UserInputError(
            f"{what}: expected a comma-separated list of {', '.join(allowed or ())}; got {value!r}"
        )
    return items


@app.command()
def select(
    indication: Annotated[str, typer.Option(help="Indication to select tiles from (e.g. LUAD).")],
    workspace: WorkspaceOption = Path("."),
    n_tiles: Annotated[
        int | None, typer.Option(min=1, help="Tiles drawn from the diversity + rare pool (50).")
    ] = None,
    n_uncertain: Annotated[
        int | None, typer.Option(min=0, help="Tiles drawn from the uncertainty pool (50).")
    ] = None,
    arms: Annotated[
        str | None, typer.Option(help=f"Arms to run, comma-separated: {','.join(ARMS)}.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice (0).")] = None,
    encoders: Annotated[
        str | None,
        typer.Option(help="Feature sets, comma-separated (first drives K-means). Default: found."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Annotations (Parquet/CSV: tile_id, label) for the presence models."),
    ] = None,
    labels_from: Annotated[
        str | None,
        typer.Option(
            help="Presence labels from 'annotations' (default) or the model's 'predictions' "
            "(the newest model's, or 'predictions:<model>'): the next active-learning round."
        ),
    ] = None,
    prefect: PrefectOption = None,
) -> None:
    """Select tiles for annotation: diversity, rare-cell enrichment and uncertainty arms.

    Writes selection.parquet/<indication>.parquet and reports/select/<indication>/ (report.md,
    CSV tables, mosaic.png), and prints the report.
    """
    section: dict[str, Any] = {
        "n_tiles": n_tiles,
        "n_uncertain": n_uncertain,
        "arms": _split(arms, what="--arms", allowed=ARMS),
        "seed": seed,
        "encoders": _split(encoders, what="--encoders"),
        "labels": str(labels.expanduser().resolve()) if labels else None,
    }
    overrides = flag_overrides({"selection": section,
                                "predict": {"selection_labels_from": labels_from}})  # fmt: skip
    config = config_for(workspace, overrides)
    from histocurate.selection.run import run_select

    run = run_stage(
        "select:select_flow",
        prefect,
        lambda progress: run_select(config, indication, progress=progress),
        workspace=str(config.workspace),
        indication=indication,
        overrides=overrides,
    )
    print_report(run.report())
