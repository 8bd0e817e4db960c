"""Prefect flow of the segment stage: one task per batch of tiles, the report as artifacts.

Each task loads the segmenter once per process (weights are not passed around) and reads
the campaign's frozen pixels itself; tiles are independent, so tasks may run on threads or
a Dask cluster (NuClick on a GPU: one batch at a time).
"""

from __future__ import annotations

from typing import Any

from flows._params import Amount, Count, Device, Segmenter, settings
from flows._stage import stage_flow, stage_run, uses_gpu
from histocurate.config import HistocurateConfig
from histocurate.segment.stage import run_segment


def _on_gpu(config: HistocurateConfig) -> bool:
    cfg = config.segment
    nuclick = cfg.segmenter == "nuclick" or (cfg.segmenter == "auto" and cfg.checkpoint)
    return bool(nuclick) and uses_gpu(cfg.device)


@stage_flow("segment")
def segment_flow(
    workspace: str,
    project: str | None = None,
    segmenter: Segmenter | None = None,
    checkpoint: str | None = None,
    device: Device | None = None,
    tiles_per_batch: Count | None = None,
    overlays: Amount | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Segment every tile of the campaign whose masks are missing or out of date.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        project: Campaign (Cytomine project name). Empty: [cytomine] project, else the only
            campaign with imported clicks.
        segmenter: nuclick (needs checkpoint), watershed (no weights), or auto. Empty: the
            workspace's [segment] (auto).
        checkpoint: NuClick weights on the worker. Empty: the workspace's.
        device: Torch device of NuClick: auto, cpu, cuda or cuda:N. Empty: the workspace's.
        tiles_per_batch: Tiles per task (their clicks share NuClick batches). Empty: the
            workspace's (16).
        overlays: Overlay pictures for at most this many tiles. Empty: the workspace's (12).
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"segment": {"threshold": 0.6}}.
        force: Redo tiles already up to date.
    """
    typed = {"segmenter": segmenter, "checkpoint": checkpoint, "device": device,
             "tiles_per_batch": tiles_per_batch, "overlays": overlays}  # fmt: skip
    with stage_run("segment", workspace, settings({"segment": typed}, overrides),
                   campaign=project, gpu=_on_gpu) as stage:  # fmt: skip
        run = run_segment(stage.config, project=project, mapper=stage.mapper,
                          progress=stage.progress, force=force)  # fmt: skip
        return stage.finish(run, key="segment")
