"""Evaluation of files and writing its table (Parquet or CSV): what the CLI and flow call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from data_schema import EVALUATION
from histocurate.io import atomic_path, write_table
from histocurate.metrics.evaluate import Evaluation, EvaluationOptions, evaluate
from histocurate.metrics.maps import MetricsInputError
from histocurate.metrics.tables import read_instances


def prediction_names(paths: Sequence[Path]) -> list[str]:
    """Short names for the report: file stems, made unique with the parent folder if needed."""
    stems = [p.stem if p.suffix == ".parquet" else p.name for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    longer = [f"{p.parent.name}/{s}" for p, s in zip(paths, stems, strict=True)]
    if len(set(longer)) == len(longer):
        return longer
    return [f"pred{i + 1}" for i in range(len(paths))]


def evaluate_files(
    truth: str | os.PathLike[str],
    predictions: Sequence[str | os.PathLike[str]],
    *,
    names: Sequence[str] | None = None,
    options: EvaluationOptions | None = None,
) -> Evaluation:
    """Read the truth and one or two prediction tables and evaluate them."""
    paths = [Path(p) for p in predictions]
    labels = list(names) if names else prediction_names(paths)
    truth_instances = read_instances(truth)
    preds = [(name, read_instances(p)) for name, p in zip(labels, paths, strict=True)]
    return evaluate(truth_instances, preds, options=options)


def check_output_path(out: str | os.PathLike[str]) -> Path:
    """``out`` if it names a .parquet or .csv file; `MetricsInputError` otherwise."""
    path = Path(out)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise MetricsInputError(f"{path}: the output must end in .parquet or .csv")
    return path


def write_evaluation(evaluation: Evaluation, out: str | os.PathLike[str]) -> Path:
    """Write the long table: Parquet (schema ``evaluation``) or CSV, atomically."""
    path = check_output_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        return write_table(evaluation.table, path, EVALUATION)
    with atomic_path(path) as tmp:
        evaluation.table.to_csv(tmp, index=False)
    return path
