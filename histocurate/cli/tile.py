"""`histocurate tile`: tissue detection and the tile grid, slide by slide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    finish_run,
    flag_overrides,
    run_stage,
)
from histocurate.tiling import run_tile


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
    run = run_stage(
        "tile:tile_flow",
        prefect,
        lambda progress: run_tile(config, progress=progress, force=force),
        workspace=str(config.workspace),
        overrides=overrides,
        force=force,
    )
    finish_run(run)
