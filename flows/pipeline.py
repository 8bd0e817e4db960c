"""End-to-end flows: the two halves of a curation campaign, around the pathologists' work.

- `prepare_campaign_flow`: tile -> embed -> select -> export (run once per campaign).
- `refresh_annotations_flow`: import -> segment -> consensus (scheduled, e.g. nightly,
  while pathologists annotate: every stage is incremental, so a night with no new click
  changes nothing).

Each stage runs as its own subflow, so the Prefect UI shows one run per stage with its
artifacts, exactly as when the stages are run one by one; a stage that ends Failed stops
the pipeline there.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.annotation import export_flow, import_flow
from flows.consensus import consensus_flow
from flows.embed import embed_flow
from flows.segment import segment_flow
from flows.select import select_flow
from flows.tile import tile_flow


@flow(name="prepare-campaign", log_prints=True)
def prepare_campaign_flow(
    workspace: str,
    indication: str,
    encoder: str | None = None,
    project: str | None = None,
    annotators: list[str] | None = None,
    k: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tile, embed and select tiles of ``indication``; export them when ``project`` is set."""
    overrides = overrides or {}
    runs: dict[str, Any] = {
        "tile": tile_flow(workspace, overrides),
        "embed": embed_flow(workspace, encoder=encoder, overrides=overrides),
        "select": select_flow(workspace, indication=indication, overrides=overrides),
    }
    if project is not None:
        runs["export"] = export_flow(
            workspace, project=project, indication=indication, annotators=annotators, k=k
        )
    return runs


@flow(name="refresh-annotations", log_prints=True)
def refresh_annotations_flow(
    workspace: str, project: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Import new clicks from Cytomine, segment them, and refresh the consensus."""
    return {
        "import": import_flow(workspace, project=project),
        "segment": segment_flow(workspace, project=project, overrides=overrides),
        "consensus": consensus_flow(workspace, project=project, overrides=overrides),
    }
