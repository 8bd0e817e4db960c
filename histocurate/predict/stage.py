"""The predict stage: `run_predict(config, *, checkpoint, dataset | slides | all tiles)`.

The stage contract (`histocurate.runs`): the checkpoint is resolved and loaded once (a bad
one stops the run with its file named and what is wrong), then each slide is one item of
work (`histocurate.predict.slide.predict_slide`), or the dataset version is one item
(`histocurate.predict.dataset.predict_dataset`). A slide that fails (no tiles, a
resolution the model cannot take) is reported and the others finish; slides whose
prediction is fresh are skipped, those older than the checkpoint are redone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.io import list_partitions
from histocurate.predict.models import clear_models, load_model
from histocurate.predict.slide import (
    SlideJob,
    close_executors,
    predict_slide,
    shared_executor,
    stored_counts,
)
from histocurate.predict.store import SlidePredictions, model_name, resolve_checkpoint
from histocurate.runs import (
    ItemOutcome,
    ItemWork,
    Mapper,
    Progress,
    Report,
    StageRun,
    run_items,
    timed,
)
from histocurate.workspace import Workspace

TIME_KEYS = ("read_wait", "forward", "post_wait", "stitch", "write")


@dataclass
class PredictRun(StageRun):
    """A prediction run: per-slide (or per-dataset) outcomes and where the files went."""

    stage: ClassVar[str] = "predict"
    workspace: Path = Path(".")
    model: str = ""
    checkpoint: Path = Path(".")
    dataset: str | None = None
    notes: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        out = list(self.notes)
        for o in self.outcomes:
            for where in o.extra.get("nan_windows", []):
                out.append(f"{o.item}: {where} gave NaN outputs: no cells there, the rest went on")
            if o.extra.get("note"):
                out.append(str(o.extra["note"]))
        return out + self.failure_lines()

    def slide_table(self) -> pd.DataFrame:
        rows = []
        for o in self.outcomes:
            e = o.extra
            rows.append(
                {
                    "slide": o.item,
                    "status": o.status,
                    "cells": o.count,
                    "windows": e.get("windows"),
                    "off tissue": e.get("blank"),
                    "NaN": e.get("nan"),
                    "cut": e.get("cut"),
                    "duplicates": e.get("duplicates"),
                    "cells/mm2": e.get("density"),
                    "seconds": round(o.seconds, 1),
                    "error": o.error or "",
                }
            )
        return pd.DataFrame(rows)

    def report(self) -> Report:
        out = SlidePredictions(self.workspace, self.model)
        what = f"dataset {self.dataset}" if self.dataset else "slide(s)"
        summary = [
            f"{int(self.total())} cells; {what}: {len(self.done)} done, {len(self.skipped)} up "
            f"to date, {len(self.failed)} failed ({self.seconds:.1f} s); model {self.model} "
            f"({self.checkpoint})",
        ]
        spent = {k: self.total(k) for k in TIME_KEYS}
        if any(spent.values()):
            parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in spent.items())
            summary.append(f"time: {parts}; post-processing CPU {self.total('post_cpu'):.1f} s")
        tables: dict[str, pd.DataFrame] = {}
        outputs: dict[str, Path] = {}
        images: list[Path] = []
        if self.dataset is None:
            ids = [o.item for o in self.outcomes if o.status != "failed"]
            counts = stored_counts(out, ids)
            if counts is not None:
                tables["cells per type"] = (
                    counts.groupby("label", sort=True)
                    .agg(
                        count=("count", "sum"),
                        slides=("slide_id", "nunique"),
                        mean_density_per_mm2=("density_per_mm2", "mean"),
                    )
                    .reset_index()
                )
            images = [out.thumbnail(s) for s in ids if out.thumbnail(s).exists()]
            outputs = {
                "cells": out.cells_dir,
                "geojson": out.root / "geojson",
                "cell_masks": out.root / "cell_masks",
                "counts": out.counts_dir,
            }
        else:
            paths = [o.extra.get("path") for o in self.outcomes if o.extra.get("path")]
            outputs = {"cells": Path(str(paths[0]))} if paths else {}
        return Report(
            title=f"Prediction ({self.model})",
            summary=summary,
            table=self.slide_table(),
            tables=tables,
            warnings=self.warnings(),
            images=images,
            outputs=outputs,
        )


def target_slides(config: HistocurateConfig, slides: list[str] | None) -> list[str]:
    """The slides asked for, or every slide with tiles."""
    if slides:
        return list(dict.fromkeys(slides))
    found = list_partitions(Workspace.of(config).tiles)
    if not found:
        raise UserInputError(
            f"no tiles in {Workspace.of(config).tiles}; run `histocurate tile` first (or "
            "pass --dataset NAME)"
        )
    return found


def run_predict(
    config: HistocurateConfig,
    *,
    checkpoint: str | Path,
    dataset: str | None = None,
    slides: list[str] | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    force: bool = False,
) -> PredictRun:
    """Predict slides (``slides``, or all with tiles) or a dataset version (``dataset``)."""
    if dataset and slides:
        raise UserInputError("pass --dataset or --slides, not both")
    path = resolve_checkpoint(config, checkpoint)
    updates = {
        k: v
        for k, v in (("device", device), ("batch_size", batch_size), ("precision", precision))
        if v is not None
    }
    settings = config.predict.model_copy(update=updates)
    job = SlideJob(config.workspace, path, model_name(path), settings, force)
    load_model(path, settings.device)  # a bad checkpoint or device stops here, named
    notes: list[str] = []

    def run() -> list[ItemOutcome]:
        cancel = True  # the executors' pending jobs are dropped unless the run ends well
        try:
            if settings.dask_address:  # a scheduler that does not answer stops the run here
                shared_executor(settings)
            if dataset:
                from histocurate.dataset.store import datasets_root, resolve_dataset

                version = resolve_dataset(datasets_root(config.workspace), dataset)
                work = ItemWork(
                    partial(_dataset_item, job=job, progress=progress), lambda v: v.spec, "predict"
                )
                outcomes = list(mapper(work, [version]))
            else:
                ids = target_slides(config, slides)
                work = ItemWork(partial(predict_slide, job=job), str, "predict")
                outcomes = run_items(work, ids, mapper=mapper, progress=progress,
                                     description=f"predicting ({job.model})")  # fmt: skip
            cancel = False
            return outcomes
        finally:  # also on error: the pool's processes end, a Dask client is closed
            close_executors(cancel=cancel)
            clear_models()

    outcomes, seconds = timed(run)
    spec = outcomes[0].item if dataset and outcomes else dataset
    return PredictRun(
        outcomes,
        seconds,
        workspace=config.workspace,
        model=job.model,
        checkpoint=path,
        dataset=spec,
        notes=notes,
    )


def _dataset_item(version: Any, *, job: SlideJob, progress: Progress | None) -> ItemOutcome:
    from histocurate.predict.dataset import predict_dataset

    return predict_dataset(version, job=job, progress=progress)
