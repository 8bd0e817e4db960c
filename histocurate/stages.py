"""The stages by name: command, package, configuration section, flow and tables, in one table.

The names differ where the field's words differ (a user *tiles* slides into *tiles*; the
*embed* command writes *features*; *select* writes the *selection*; *evaluate* is the
*metrics* package): this table is the one place that maps them, for the docs, the CLI's
help and the tests that check the README and ``prefect.yaml`` stay true.

>>> stage("embed").package, stage("embed").config_section, stage("embed").tables
('histocurate.features', 'features', ('features/<encoder>/',))
>>> [s.command for s in STAGES][:3]
['tile', 'embed', 'select']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of the pipeline and the names it goes by."""

    command: str  # `histocurate <command>`
    package: str  # the library package holding its run function
    run: str  # the run function (module:function)
    config_section: str | None  # [section] of histocurate.toml
    flow: str  # Prefect flow, flows/<module>.py:<function>
    tables: tuple[str, ...]  # what it writes, relative to the workspace


STAGES: tuple[Stage, ...] = (
    Stage("tile", "histocurate.tiling", "histocurate.tiling.stage:run_tile", "tiling",
          "flows/tile.py:tile_flow", ("tiles.parquet/", "slides.parquet")),
    Stage("embed", "histocurate.features", "histocurate.features.stage:run_embed", "features",
          "flows/embed.py:embed_flow", ("features/<encoder>/",)),
    Stage("select", "histocurate.selection", "histocurate.selection.run:run_select",
          "selection", "flows/select.py:select_flow", ("selection.parquet/",)),
    Stage("export", "histocurate.cytomine", "histocurate.cytomine.stage:run_export", "cytomine",
          "flows/annotation.py:export_flow",
          ("assignments.parquet", "campaigns/<project>/images/")),
    Stage("import", "histocurate.cytomine", "histocurate.cytomine.stage:run_import", "cytomine",
          "flows/annotation.py:import_flow", ("points.parquet", "import_rejects.parquet")),
    Stage("segment", "histocurate.segment", "histocurate.segment.stage:run_segment", "segment",
          "flows/segment.py:segment_flow", ("campaigns/<project>/masks.parquet/",)),
    Stage("consensus", "histocurate.consensus", "histocurate.consensus.stage:run_consensus",
          "consensus", "flows/consensus.py:consensus_flow",
          ("campaigns/<project>/consensus.parquet",
           "campaigns/<project>/consensus_fates.parquet")),
    Stage("push-consensus", "histocurate.cytomine",
          "histocurate.cytomine.push_stage:run_push_consensus", "cytomine",
          "flows/annotation.py:push_consensus_flow", ()),
    Stage("dataset build", "histocurate.dataset", "histocurate.dataset.build:run_dataset_build",
          "dataset", "flows/dataset.py:dataset_flow", ("datasets/<name>/<version>/",)),
    Stage("train", "histocurate.training", "histocurate.training.stage:run_train", "train",
          "flows/train.py:train_flow", ("runs/<run>/",)),
    Stage("predict", "histocurate.predict", "histocurate.predict.stage:run_predict", "predict",
          "flows/predict.py:predict_flow",
          ("cells.parquet/", "datasets/<name>/<version>/predictions/")),
    Stage("evaluate", "histocurate.metrics", "histocurate.metrics.stage:run_evaluate",
          "evaluate", "flows/evaluate.py:evaluate_flow", ("reports/evaluate/",)),
)  # fmt: skip
"""Every stage, in pipeline order (one row each; aligned columns read better unformatted)."""


def stage(command: str) -> Stage:
    """The stage run by ``histocurate <command>``."""
    for row in STAGES:
        if row.command == command:
            return row
    raise KeyError(f"no stage {command!r}; stages: {', '.join(s.command for s in STAGES)}")


def writer_of(path: str) -> Stage | None:
    """The stage that writes the table at ``path`` (a file or a partition of a folder), by
    the table's name in `STAGES`; None for a file no stage writes.

    >>> writer_of("ws/campaigns/p1/masks.parquet/t1.parquet").command
    'segment'
    >>> writer_of("ws/points.parquet").command, writer_of("elsewhere.csv")
    ('import', None)
    """
    parts = str(path).replace("\\", "/").split("/")
    for row in STAGES:
        for table in row.tables:
            name = table.rstrip("/").split("/")[-1]
            if "<" not in name and name in parts:
                return row
    return None
