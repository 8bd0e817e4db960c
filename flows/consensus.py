"""Prefect flow of the consensus stage: one task per shard of tiles, then one merge.

Thin wiring over `histocurate.consensus.stage.run_consensus`: each shard of tiles is a task
(matching and re-segmentation; tiles are independent); the merge (labels over the whole
campaign, the table, GeoJSON, overlays and the agreement report) runs in the flow, and the
report becomes the run's artifacts. Segmentation is its own stage and flow (`segment`): the
end-to-end flows run both. A run with no new or changed masks writes nothing and says so.
"""

from __future__ import annotations

from typing import Any

from flows._params import Amount, Count, LabelRule, Threshold, settings
from flows._stage import stage_flow, stage_run
from histocurate.consensus.stage import run_consensus


@stage_flow("consensus")
def consensus_flow(
    workspace: str,
    project: str | None = None,
    iou_threshold: Threshold | None = None,
    min_annotators: Count | None = None,
    label_rule: LabelRule | None = None,
    resegment: bool | None = None,
    overlays: Amount | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Consensus of a campaign's masks: match annotators, vote labels, re-segment, report.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        project: Campaign (Cytomine project name). Empty: [cytomine] project, else the only
            campaign with imported clicks.
        iou_threshold: Masks of two annotators match when their IoU exceeds this (0-1).
            Empty: the workspace's [consensus] (0.4).
        min_annotators: Keep nuclei found by at least this many annotators. Empty: the
            workspace's (2).
        label_rule: Rule of the label column: majority or dawid-skene (both are always
            reported). Empty: the workspace's (majority).
        resegment: Re-segment the consensus centroids with the configured segmenter.
            Empty: the workspace's (yes).
        overlays: Overlay pictures for at most this many tiles. Empty: the workspace's (25).
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"consensus": {"shard_tiles": 32}}.
        force: Redo even when up to date.
    """
    typed = {"iou_threshold": iou_threshold, "min_annotators": min_annotators,
             "label_rule": label_rule, "resegment": resegment, "overlays": overlays}  # fmt: skip
    with stage_run("consensus", workspace, settings({"consensus": typed}, overrides),
                   campaign=project) as stage:  # fmt: skip
        run = run_consensus(stage.config, project=project, mapper=stage.mapper,
                            progress=stage.progress, force=force)  # fmt: skip
        return stage.finish(run, key="consensus")
