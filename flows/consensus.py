"""Prefect flow of the consensus stage: one task per shard of tiles, then one merge.

Thin wiring over `histocurate.consensus.stage.run_consensus`: each shard of tiles is a task
(matching and re-segmentation; tiles are independent); the merge (labels over the whole
campaign, the table, GeoJSON, overlays and the agreement report) runs in the flow, and the
report becomes the run's artifacts. Segmentation is its own stage and flow (`segment`): the
end-to-end flows run both.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config
from histocurate.consensus.stage import run_consensus


@flow(name="consensus", log_prints=True)
def consensus_flow(
    workspace: str,
    project: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Consensus of a campaign's masks: match annotators, vote labels, re-segment, report."""
    config = load_config(workspace, overrides or {})
    run = run_consensus(config, project=project, mapper=task_mapper("consensus"), force=force)
    return finish(run, key="consensus")
