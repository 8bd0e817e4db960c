"""Prefect flow of the segment stage: one task per batch of tiles (paths in, files out).

Each task re-reads the config and loads the segmenter itself (weights are not passed
around); tiles are independent, so tasks may run on threads or a Dask cluster.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from histocurate.config import load_config
from histocurate.segment.stage import (
    SegmentRun,
    plan_segment,
    segment_tiles,
    segmenter_for,
    write_summary,
)
from histocurate.workspace import Workspace


@task(name="segment-tiles", cache_policy=NO_CACHE)
def segment_tiles_task(
    workspace: str, overrides: dict[str, Any], tile_ids: list[str]
) -> dict[str, Any]:
    config = load_config(workspace, overrides)
    segmenter = segmenter_for(config)
    plan = plan_segment(config, segmenter.name, force=True, tile_ids=tile_ids)
    run = segment_tiles(config, plan.pending, segmenter=segmenter, plan=plan)
    return run.as_dict()


@flow(name="segment", log_prints=True)
def segment_flow(
    workspace: str, overrides: dict[str, Any] | None = None, force: bool = False
) -> dict[str, Any]:
    """Segment every tile whose masks are missing or out of date."""
    overrides = overrides or {}
    config = load_config(workspace, overrides)
    ws = Workspace.of(config)
    segmenter = segmenter_for(config)
    plan = plan_segment(config, segmenter.name, force=force)
    run = SegmentRun(
        segmenter=segmenter.name, tiles_skipped=plan.skipped, tiles_missing=plan.missing
    )
    for tile_id in plan.stale:
        (ws.masks / f"{tile_id}.parquet").unlink(missing_ok=True)
        run.tiles_removed.append(tile_id)
    chunk = config.segment.tiles_per_batch
    futures = [
        segment_tiles_task.submit(str(config.workspace), overrides, plan.pending[i : i + chunk])
        for i in range(0, len(plan.pending), chunk)
    ]
    for future in futures:
        part = future.result()
        run.tiles_done += part["tiles_done"]
        run.outside += part["outside"]
        run.overlays += part["overlays"]
        for key in ("masks", "fallback", "merged"):
            setattr(run, key, getattr(run, key) + part[key])
    write_summary(ws, run)
    _report(run)
    return run.as_dict()


def _report(run: SegmentRun) -> None:
    create_table_artifact(
        key="segment-summary",
        table=[
            {"what": k, "value": v}
            for k, v in (
                ("segmenter", run.segmenter),
                ("tiles segmented", len(run.tiles_done)),
                ("tiles up to date", len(run.tiles_skipped)),
                ("masks", run.masks),
                ("fallback discs", run.fallback),
                ("double clicks", run.merged),
                ("clicks outside their tile", len(run.outside)),
            )
        ],
        description="Segment stage",
    )
    create_markdown_artifact(
        key="segment-report",
        markdown=(
            f"# Segmentation by `{run.segmenter}`\n\n{run.masks} masks in "
            f"{len(run.tiles_done)} tiles; {run.fallback} clicks fell outside every predicted "
            f"component (small disc instead).\n\nOverlays:\n"
            + "".join(f"- `{p}`\n" for p in run.overlays)
        ),
        description="Segment run report",
    )
