"""The evaluate stage: one or two predictions against a truth, as a run with a report.

`run_evaluate(*, truth, predictions, options, out=None, mapper=map) -> EvaluateRun` (the
stage contract, `histocurate.runs`; the evaluation is one item of work). The report's
tables are the paper-style display frames of `histocurate.metrics.report.summary_frames`,
shown as rich tables in the terminal and markdown tables in Prefect.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

from histocurate.metrics.evaluate import Evaluation, EvaluationOptions
from histocurate.metrics.output import check_output_path, evaluate_files, write_evaluation
from histocurate.metrics.report import summary_frames, title_of
from histocurate.runs import ItemFailed, ItemOutcome, ItemWork, Mapper, Report, StageRun, timed


@dataclass
class EvaluateRun(StageRun):
    """The evaluation and where its table went."""

    stage: ClassVar[str] = "evaluate"
    truth: str = ""
    evaluation: Evaluation | None = None
    out: Path | None = None

    def report(self) -> Report:
        if self.evaluation is None:
            return Report(title="Evaluation", warnings=self.failure_lines())
        table = self.evaluation.table
        first = table.iloc[0]
        return Report(
            title=f"Evaluation against {Path(self.truth).name}",
            summary=[
                f"Intervals: {first['confidence']:.0%} bootstrap percentile over "
                f"{int(first['n_tiles'])} tiles ({int(first['n_boot'])} resamples); DQ/SQ/PQ "
                f"aggregation: {first['aggregate']}; pairing by {self.evaluation.mode}."
            ],
            tables={title_of(k): f for k, f in summary_frames(table).items()},
            warnings=list(self.evaluation.notes),
            outputs={"metrics": self.out} if self.out else {},
        )


def _evaluate(
    job: tuple[str, tuple[str, ...]], *, options: EvaluationOptions, out: Path | None
) -> ItemOutcome:
    truth, predictions = job
    evaluation = evaluate_files(truth, predictions, options=options)
    if out is not None:
        write_evaluation(evaluation, out)
    return ItemOutcome(
        "evaluation", "done", count=evaluation.n_tiles, extra={"evaluation": evaluation}
    )


def run_evaluate(
    *,
    truth: str | os.PathLike[str],
    predictions: Sequence[str | os.PathLike[str]],
    options: EvaluationOptions,
    out: str | os.PathLike[str] | None = None,
    mapper: Mapper = map,
) -> EvaluateRun:
    """Evaluate ``predictions`` against ``truth``; write the table to ``out`` if given."""
    target = check_output_path(out) if out is not None else None
    job = (str(truth), tuple(str(p) for p in predictions))
    work = ItemWork(
        partial(_evaluate, options=options, out=target), lambda j: "evaluation", "evaluate"
    )

    def run() -> list[ItemOutcome]:
        return list(mapper(work, [job]))

    outcomes, seconds = timed(run)
    (outcome,) = outcomes
    if outcome.status == "failed" and outcome.input_error:
        from histocurate.metrics.maps import MetricsInputError

        raise MetricsInputError(outcome.error or "evaluation failed")
    if outcome.status == "failed":
        raise ItemFailed(outcome)
    evaluation = outcome.extra["evaluation"]
    plain = ItemOutcome("evaluation", "done", count=outcome.count, seconds=seconds)
    return EvaluateRun([plain], seconds, truth=str(truth), evaluation=evaluation, out=target)
