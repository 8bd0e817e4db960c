"""Prefect flow: segment the clicks (optional), consensus per shard of tiles, one merge.

Thin wiring over `histocurate.consensus.shards`: each shard of tiles is a task (matching
and re-segmentation; tiles are independent), then one task fits the labels over the whole
campaign and writes consensus.parquet, the GeoJSON, overlays and the agreement report,
which also become the run's artifacts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.segment import segment_flow
from histocurate.config import load_config
from histocurate.consensus.shards import (
    clear_shards,
    merge_shards,
    outcome_from_dict,
    plan_shards,
    run_shard,
    shard_keys,
)


@task(name="consensus-shard", cache_policy=NO_CACHE)
def consensus_shard_task(
    workspace: str, overrides: dict[str, Any], tile_ids: list[str], key: str
) -> dict[str, Any]:
    """Match and re-segment one shard of tiles (config re-read: tasks pass paths)."""
    config = load_config(workspace, overrides)
    return run_shard(config, tile_ids, key).to_dict()


@task(name="consensus-merge", cache_policy=NO_CACHE)
def consensus_merge_task(
    workspace: str, overrides: dict[str, Any], outcomes: list[dict[str, Any]]
) -> dict[str, Any]:
    """Labels over the campaign; table, exports, report. Returns what the artifacts show."""
    config = load_config(workspace, overrides)
    run = merge_shards(config, [outcome_from_dict(o) for o in outcomes])
    per = run.report.per_annotator.astype(object)
    return {
        "table": str(run.table),
        "nuclei": len(run.nuclei),
        "resegmented": run.resegmented,
        "geojson": len(run.geojson),
        "overlays": [str(p) for p in run.overlays],
        "tiles_without_pixels": run.tiles_without_pixels,
        "markdown": run.report.to_markdown(),
        "per_annotator": per.where(per.notna(), None).to_dict("records"),
    }


@flow(name="consensus", log_prints=True)
def consensus_flow(
    workspace: str, overrides: dict[str, Any] | None = None, segment: bool = True
) -> dict[str, Any]:
    """Segment (optional), then consensus in shards of tiles, then one merge."""
    overrides = overrides or {}
    config = load_config(workspace, overrides)
    root = str(config.workspace)
    if segment:
        segment_flow(root, overrides)
    shards = plan_shards(config)
    clear_shards(config)
    futures = [
        consensus_shard_task.submit(root, overrides, tiles, key)
        for tiles, key in zip(shards, shard_keys(len(shards)), strict=True)
    ]
    outcomes = [f.result() for f in futures]
    summary = consensus_merge_task(root, overrides, outcomes)
    create_table_artifact(
        key="consensus-per-annotator",
        table=summary["per_annotator"],
        description="Clicks, fraction matched and label agreement with consensus, per annotator",
    )
    create_table_artifact(
        key="consensus-shards",
        table=[{k: o[k] for k in ("key", "tiles", "annotations", "nuclei")} for o in outcomes],
        description="Consensus shards (tasks)",
    )
    create_markdown_artifact(
        key="consensus-agreement",
        markdown=summary["markdown"]
        + f"\n\nTable: `{summary['table']}`; overlays: {len(summary['overlays'])} PNGs.\n",
        description="Agreement between annotators and with consensus",
    )
    return {k: v for k, v in summary.items() if k not in ("markdown",)}
