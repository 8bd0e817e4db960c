"""Prefect flow of the tile stage: one task per slide, the tiling report as artifacts."""

from __future__ import annotations

from typing import Any

from flows._params import Fraction, Positive, settings
from flows._stage import stage_flow, stage_run
from histocurate.tiling import run_tile


@stage_flow("tile")
def tile_flow(
    workspace: str,
    tile_size_um: Positive | None = None,
    tissue_threshold: Fraction | None = None,
    target_mpp: Positive | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Tile every slide of the workspace's manifest; slides already tiled are skipped.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        tile_size_um: Tile side in micrometres. Empty: the workspace's [tiling] (112).
        tissue_threshold: Keep tiles whose tissue fraction is at least this (0-1). Empty:
            the workspace's [tiling] (0.5).
        target_mpp: Read tiles at this resolution (um/px). Empty: the workspace's [tiling]
            (the standard 0.25 or 0.5 nearest the slide's own).
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"tiling": {"thumbnail_mpp": 4}}.
        force: Redo slides already tiled.
    """
    typed = {"tile_size_um": tile_size_um, "tissue_threshold": tissue_threshold,
             "target_mpp": target_mpp}  # fmt: skip
    with stage_run("tile", workspace, settings({"tiling": typed}, overrides)) as stage:
        run = run_tile(stage.config, mapper=stage.mapper, progress=stage.progress, force=force)
        return stage.finish(run, key="tile")
