"""End-to-end flows: the two halves of a curation campaign, around the pathologists' work.

- `prepare_campaign_flow`: tile -> embed -> select -> export (run once per campaign).
- `refresh_annotations_flow`: import -> segment -> consensus (scheduled, e.g. nightly,
  while pathologists annotate: every stage is incremental, so a night with no new click
  changes no file, and the run's summary says so).

Each is one parent run with each stage as its own subflow (one run per stage with its
artifacts, exactly as when the stages are run one by one), all tagged with the parent's
``group:`` tag; a stage that ends Failed stops the pipeline there, and the parent fails
with its message.
"""

from __future__ import annotations

from typing import Any

from flows._params import Amount, Count, EncoderName, Indication
from flows._pipeline import pipeline_run
from flows._stage import stage_flow
from flows.annotation import export_flow, import_flow
from flows.consensus import consensus_flow
from flows.embed import embed_flow
from flows.segment import segment_flow
from flows.select import select_flow
from flows.tile import tile_flow


@stage_flow("prepare-campaign")
def prepare_campaign_flow(
    workspace: str,
    indication: Indication,
    encoder: EncoderName | None = None,
    n_tiles: Count | None = None,
    n_uncertain: Amount | None = None,
    project: str | None = None,
    annotators: list[str] | None = None,
    k: Count | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Tile, embed and select tiles of ``indication``; export them when ``project`` is set.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        indication: Indication to select tiles from (e.g. LUAD), as in the manifest.
        encoder: Encoder of the features: builtin, phikon, h0-mini or timm:<model name>.
            Empty: the workspace's [features] (builtin).
        n_tiles: Tiles drawn from the diversity + rare pool. Empty: the workspace's (50).
        n_uncertain: Tiles drawn from the uncertainty pool. Empty: the workspace's (50).
        project: Cytomine project to export the selection to. Empty: no export.
        annotators: Cytomine user names of the annotators. Empty: the workspace's.
        k: Annotators per tile. Empty: the workspace's [cytomine].
        overrides: Any other setting, nested like histocurate.toml (given to every stage).
    """
    with pipeline_run("prepare-campaign", workspace, campaign=project,
                      indication=indication) as pipeline:  # fmt: skip
        pipeline.run("tile", tile_flow, workspace=workspace, overrides=overrides)
        pipeline.run("embed", embed_flow, workspace=workspace, encoder=encoder,
                     overrides=overrides)  # fmt: skip
        pipeline.run("select", select_flow, workspace=workspace, indication=indication,
                     n_tiles=n_tiles, n_uncertain=n_uncertain, overrides=overrides)  # fmt: skip
        if project is not None:
            pipeline.run("export", export_flow, workspace=workspace, project=project,
                         indication=indication, annotators=annotators, k=k)  # fmt: skip
        return pipeline.finish()


@stage_flow("refresh-annotations")
def refresh_annotations_flow(
    workspace: str, project: str | None = None, overrides: dict[str, Any] | None = None
) -> Any:
    """Import new clicks from Cytomine, segment them, and refresh the consensus.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        project: Campaign (Cytomine project name). Empty: the workspace's [cytomine] project.
        overrides: Any other setting, nested like histocurate.toml (given to every stage).
    """
    with pipeline_run("refresh-annotations", workspace, campaign=project) as pipeline:
        pipeline.run("import", import_flow, workspace=workspace, project=project)
        pipeline.run("segment", segment_flow, workspace=workspace, project=project,
                     overrides=overrides)  # fmt: skip
        pipeline.run("consensus", consensus_flow, workspace=workspace, project=project,
                     overrides=overrides)  # fmt: skip
        return pipeline.finish()
