"""`histocurate evaluate --model RUN_OR_CHECKPOINT [--model OTHER] --dataset NAME`.

Each model's prediction on the dataset's tiles is made when missing or stale (the predict
stage's dataset item, one task per model), then evaluated against the dataset's nuclei with
`histocurate.metrics.evaluate` with the ``[evaluate]`` settings (masks paired at IoU >
``iou_threshold``, 0.5; per-class F1 with the ``multilabel`` rule on the consensus label
sets; DQ/SQ/PQ ``aggregate``d over tiles; ``bootstrap`` resamples of tiles, 1,000; paired
two-sided p-values between two models): over all tiles and per indication. Tables
(`histocurate.predict.evaluate_report`): the paper's Table 2 layout (indication x metric,
one column per model, the difference and its p-value) and per-class F1, markdown, and a
bar plot of per-class F1 with its 95 % intervals (the paper's Figure 3a).

Which tiles: ``fold`` when given, else the held-out fold the checkpoint's training config
names for this dataset (``train_config`` keys ``dataset`` and ``fold``), else every tile
(with a warning: a model evaluated on its training tiles looks better than it is). Labels
outside the 13 types (a PanNuke 'inflammatory') leave the class counts, said in a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_schema import DATASET_NUCLEI, TILE_CELLS
from histocurate.config import HistocurateConfig
from histocurate.dataset.store import DatasetVersion, datasets_root, resolve_dataset
from histocurate.errors import UserInputError
from histocurate.io import read_table
from histocurate.labels import ANNOTATION_LABELS
from histocurate.metrics.evaluate import Evaluation, EvaluationOptions, evaluate
from histocurate.metrics.tables import instances_from_frame
from histocurate.predict.dataset import predict_dataset
from histocurate.predict.models import clear_models, load_model
from histocurate.predict.slide import SlideJob, close_executors
from histocurate.predict.store import dataset_predictions, model_name, resolve_checkpoint
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, Report, StageRun, timed

ALL = "All"
MODEL_REPORTS = Path("reports") / "evaluate" / "models"


@dataclass
class ModelEvaluationRun(StageRun):
    """The evaluations (``All`` and per indication) of one or two models on a dataset."""

    stage: ClassVar[str] = "evaluate"
    dataset: str = ""
    models: list[str] = field(default_factory=list)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    out: Path | None = None
    options: EvaluationOptions | None = None  # how the nuclei were paired and counted

    def report(self) -> Report:
        from histocurate.predict.evaluate_report import model_report

        return model_report(self)


def _clean_labels(frame: pd.DataFrame, what: str, notes: list[str]) -> pd.DataFrame:
    """Labels outside the ontology (dataset-specific classes) -> no class, said once."""
    allowed = set(ANNOTATION_LABELS)
    label = frame["label"].where(frame["label"].isin(allowed), None)
    dropped = sorted(set(frame["label"].dropna()) - allowed)
    frame = frame.assign(label=label)
    if "labels" in frame.columns:
        sets = [None if v is None else [s for s in v if s in allowed] for v in frame["labels"]]
        dropped += sorted({s for v in frame["labels"] if v is not None for s in v} - allowed)
        frame = frame.assign(labels=pd.Series(sets, index=frame.index, dtype=object))
    if dropped:
        notes.append(
            f"{what}: classes {sorted(set(dropped))} are not among the 13 types; their "
            "nuclei count for detection and segmentation only"
        )
    return frame


def _fold_of(info: dict[str, Any], version: DatasetVersion) -> int | None:
    config = info.get("train_config") or {}
    named = str(config.get("dataset") or "")
    fold = config.get("fold")
    if isinstance(fold, int) and named and named.split("@")[0] == version.name:
        return fold
    return None


def _predict(job: SlideJob, *, version: DatasetVersion, progress: Progress | None) -> ItemOutcome:
    return predict_dataset(version, job=job, progress=progress)


def evaluation_options(config: HistocurateConfig, tile_size: int) -> EvaluationOptions:
    """The ``[evaluate]`` settings for model predictions: masks (both sides have
    polygons), every dataset tile evaluated (one without true nuclei counts as empty)."""
    ev = config.evaluate
    return EvaluationOptions(
        iou_threshold=ev.iou_threshold, radius=ev.match_radius_px, tile_size=tile_size,
        n_boot=ev.bootstrap, seed=ev.seed, confidence=ev.confidence, multilabel=ev.multilabel,
        extra_tiles="empty", aggregate=ev.aggregate, match="masks",
    )  # fmt: skip


def evaluate_groups(
    truth: pd.DataFrame,
    preds: Sequence[tuple[str, pd.DataFrame]],
    tiles: pd.DataFrame,
    options: EvaluationOptions,
    notes: list[str],
) -> dict[str, Evaluation]:
    """Evaluations over all ``tiles`` and per indication (truth and predictions in tile
    pixels; ``tiles``: tile_id, indication)."""
    groups = [(ALL, tiles)] + [(str(k), g) for k, g in tiles.groupby("indication", sort=True)]
    if tiles["indication"].nunique() < 2:
        groups = groups[:1]
    out: dict[str, Evaluation] = {}
    for name, group in groups:
        ids = set(group["tile_id"])
        t = truth[truth["tile_id"].isin(ids)]
        if t.empty:
            notes.append(f"{name}: no true nucleus on its {len(ids)} tile(s); not evaluated")
            continue
        truth_i = instances_from_frame(t.reset_index(drop=True), origin=f"truth ({name})")
        named = [
            (model, instances_from_frame(p[p["tile_id"].isin(ids)].reset_index(drop=True),
                                         origin=f"{model} ({name})"))
            for model, p in preds
        ]  # fmt: skip
        out[name] = evaluate(truth_i, named, options=options)
    return out


def run_model_evaluation(
    config: HistocurateConfig,
    *,
    models: Sequence[str],
    dataset: str,
    fold: int | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
    force: bool = False,
) -> ModelEvaluationRun:
    """Predict (when needed) and evaluate one or two models on ``dataset``."""
    if not 1 <= len(models) <= 2:
        raise UserInputError(f"--model takes one or two models, got {len(models)}")
    version = resolve_dataset(datasets_root(config.workspace), dataset)
    paths = [resolve_checkpoint(config, m) for m in models]
    names = [model_name(p) for p in paths]
    if len(set(names)) != len(names):
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    jobs = [SlideJob(config.workspace, p, n, config.predict, force) for p, n in zip(paths, names,
            strict=True)]  # fmt: skip
    notes: list[str] = []

    held_out = {"train_config": load_model(paths[0], config.predict.device).info.train_config}

    used: list[EvaluationOptions] = []

    def run() -> tuple[list[ItemOutcome], dict[str, Evaluation]]:
        work = ItemWork(partial(_predict, version=version, progress=progress),
                        lambda j: j.model, "evaluate")  # fmt: skip
        try:
            outcomes = list(mapper(work, jobs))
        finally:
            close_executors()
            clear_models()
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            return outcomes, {}
        tiles = pq.read_table(version.tiles, columns=["tile_id", "indication", "fold", "width",
                                                      "height"]).to_pandas()  # fmt: skip
        chosen = fold
        if chosen is None:
            chosen = _fold_of(held_out, version)
            if chosen is not None:
                notes.append(f"tiles of fold {chosen}: held out by {names[0]}'s training")
        if chosen is not None:
            if chosen not in set(tiles["fold"]):
                raise UserInputError(
                    f"fold {chosen} is not a fold of {version.spec} (folds: "
                    f"{sorted(set(tiles['fold']))})"
                )
            tiles = tiles[tiles["fold"] == chosen]
        else:
            notes.append(
                f"every tile of {version.spec} evaluated (no --fold, and the checkpoint names "
                "no held-out fold): scores on training tiles would flatter a model"
            )
        truth = read_table(version.nuclei, DATASET_NUCLEI,
                           columns=["tile_id", "x", "y", "polygon", "label", "labels"])  # fmt: skip
        truth = _clean_labels(truth, f"{version.spec} nuclei", notes)
        preds = []
        for job in jobs:
            frame = read_table(dataset_predictions(version.path, job.model), TILE_CELLS,
                               columns=["tile_id", "x", "y", "polygon", "label"])  # fmt: skip
            preds.append((job.model, _clean_labels(frame, f"{job.model} predictions", notes)))
        size = int(max(tiles["width"].max(), tiles["height"].max())) if len(tiles) else 1
        options = evaluation_options(config, size)
        used.append(options)
        return outcomes, evaluate_groups(truth, preds, tiles, options, notes)

    (outcomes, evaluations), seconds = timed(run)
    plain = [ItemOutcome(o.item, o.status, o.count, o.seconds, o.error, o.input_error,
                         {k: v for k, v in o.extra.items() if k != "nan_windows"})
             for o in outcomes]  # fmt: skip
    for o in outcomes:
        notes += [f"{o.item}: {w} gave NaN outputs" for w in o.extra.get("nan_windows", [])]
    out = (
        config.workspace
        / "reports"
        / "evaluate"
        / "models"
        / f"{version.name}-{'-vs-'.join(names)}"
    )
    result = ModelEvaluationRun(plain, seconds, dataset=version.spec, models=names,
                                evaluations=evaluations, notes=notes, out=out,
                                options=used[0] if used else None)  # fmt: skip
    if evaluations:
        from histocurate.predict.evaluate_report import write_outputs

        write_outputs(result)
    return result


def mean_f1(evaluation: Evaluation, model: str) -> float:
    """The mean per-class F1 of ``model`` in an evaluation (NaN when absent)."""
    t = evaluation.table
    row = t[(t.prediction == model) & (t.metric == "f1_mean") & (t.kind == "value")]
    return float(row["value"].iloc[0]) if len(row) else float(np.nan)
