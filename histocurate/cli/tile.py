"""`histocurate tile`: tissue detection and the tile grid, slide by slide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    track,
    use_prefect,
)
from histocurate.tiling import SlideOutcome, prepare_slides, tile_one_slide


@app.command()
def tile(
    workspace: WorkspaceOption = Path("."),
    tile_size_um: Annotated[float | None, typer.Option(help="Tile side in um (112).")] = None,
    tissue_threshold: Annotated[
        float | None, typer.Option(help="Minimum tissue fraction of a kept tile (0.5).")
    ] = None,
    target_mpp: Annotated[
        float | None, typer.Option(help="Read tiles at this um/px (default: 0.25/0.5, nearest).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo slides already tiled.")] = False,
    prefect: PrefectOption = None,
) -> None:
    """Find tissue and cut each slide of the manifest into 112 um tiles (tiles.parquet)."""
    tiling = {
        "tile_size_um": tile_size_um,
        "tissue_threshold": tissue_threshold,
        "target_mpp": target_mpp,
    }
    overrides = flag_overrides({"tiling": tiling})
    config = config_for(workspace, overrides)
    if use_prefect(prefect):
        from flows.tile import tile_flow

        outcomes = [SlideOutcome(**o) for o in tile_flow(str(config.workspace), overrides, force)]
    else:
        rows = prepare_slides(config)
        outcomes = [
            tile_one_slide(row, config, force=force)
            for row in track(rows, total=len(rows), description="tiling")
        ]
    table = Table("slide", "status", "tiles", "seconds", title="tiling")
    for o in outcomes:
        table.add_row(o.slide_id, o.status, str(o.n_tiles), f"{o.seconds:.1f}")
    console.print(table)
    console.print(f"{sum(o.n_tiles for o in outcomes)} tiles written under {config.workspace}")
    exit_for_outcomes(outcomes)
