"""Prefect flow of the tile stage: one task per slide, a table artifact of tiles per slide."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from histocurate.config import load_config
from histocurate.tiling import prepare_slides, tile_one_slide
from histocurate.workspace import Workspace


@task(name="tile-slide", cache_policy=NO_CACHE)
def tile_slide_task(
    slide_row: dict[str, Any], workspace: str, overrides: dict[str, Any], force: bool
) -> dict[str, Any]:
    """Tile one slide (the config is re-read in the task: tasks pass paths, not objects)."""
    config = load_config(workspace, overrides)
    return tile_one_slide(slide_row, config, force=force).to_dict()


@flow(name="tile", log_prints=True)
def tile_flow(
    workspace: str, overrides: dict[str, Any] | None = None, force: bool = False
) -> list[dict[str, Any]]:
    """Tile every slide of the workspace's manifest; slides already tiled are skipped."""
    overrides = overrides or {}
    config = load_config(workspace, overrides)
    slides = prepare_slides(config)
    futures = [
        tile_slide_task.submit(row, str(config.workspace), overrides, force) for row in slides
    ]
    outcomes = [future.result() for future in futures]
    create_table_artifact(
        key="tiles-per-slide",
        table=[{k: o[k] for k in ("slide_id", "status", "n_tiles", "error")} for o in outcomes],
        description="Tiles kept per slide in this run",
    )
    overlays = Workspace.of(config).reports / "tile"
    failed = [o for o in outcomes if o["status"] == "failed"]
    create_markdown_artifact(
        key="tile-report",
        markdown=(
            f"# Tiling\n\n{sum(o['n_tiles'] for o in outcomes)} tiles from "
            f"{len(outcomes) - len(failed)} slides; {len(failed)} failed.\n\n"
            f"Tissue overlays (kept tiles boxed): `{overlays}`\n\n"
            + "".join(f"- **{o['slide_id']}**: {o['error']}\n" for o in failed)
        ),
        description="Tiling run report",
    )
    return outcomes
