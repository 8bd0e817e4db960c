"""Prefect flow of the select stage: per-slide passes and the model fit as tasks, the report
as artifacts.

The algorithm is `histocurate.selection.pipeline.run_selection`; this flow only gives it a
mapper that runs each per-slide step (scan, then score) as one task per slide and the fit
of the presence models as one task between them, and publishes the report: the markdown
text the CLI prints, its tables, and the mosaic. Tasks get a `FeatureSource` (a workspace
path and encoder names), never feature arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from flows._params import Amount, Arm, Count, Indication, settings
from flows._stage import stage_flow, stage_run
from histocurate.selection.run import run_select


@stage_flow("select")
def select_flow(
    workspace: str,
    indication: Indication,
    n_tiles: Count | None = None,
    n_uncertain: Amount | None = None,
    arms: Annotated[list[Arm], Field(min_length=1)] | None = None,
    seed: int | None = None,
    encoders: Annotated[list[str], Field(max_length=2)] | None = None,
    labels: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Select tiles of ``indication`` for annotation (diversity, rare cells, uncertainty).

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        indication: Indication to select tiles from (e.g. LUAD), as in the manifest.
        n_tiles: Tiles drawn from the diversity + rare pool (N0). Empty: the workspace's
            [selection] (50).
        n_uncertain: Tiles drawn from the uncertainty pool. Empty: the workspace's (50).
        arms: Arms to run: diversity, rare, uncertainty. Empty: the workspace's (all three).
        seed: Seed of every random choice. Empty: the workspace's (0).
        encoders: Feature sets of the presence models (1 or 2; the first drives K-means).
            Empty: the workspace's, else every encoder with features.
        labels: Presence labels (Parquet/CSV: tile_id, label) on the worker. Empty: the
            workspace's, else a campaign's consensus or imported points.
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"selection": {"epochs": 40}}.
    """
    label_path = str(Path(labels).expanduser().resolve()) if labels else None
    typed = {"n_tiles": n_tiles, "n_uncertain": n_uncertain, "arms": arms, "seed": seed,
             "encoders": encoders, "labels": label_path}  # fmt: skip
    with stage_run("select", workspace, settings({"selection": typed}, overrides),
                   indication=indication) as stage:  # fmt: skip
        run = run_select(stage.config, indication, mapper=stage.mapper, progress=stage.progress)
        return stage.finish(run, key=f"select-{indication.lower()}")
