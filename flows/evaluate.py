"""Prefect flow of `histocurate evaluate`: the metrics as table and markdown artifacts.

Thin: one task evaluates (reads the tables by path, counts tile by tile, bootstraps) and
writes the table; the run's report carries the same tables as the terminal.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.metrics.evaluate import EvaluationOptions
from histocurate.metrics.stage import run_evaluate


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    truth: str,
    predictions: list[str],
    options: dict[str, Any] | None = None,
    out: str | None = None,
) -> Any:
    """Evaluate one or two prediction tables against a truth (paths in, report out)."""
    opts = dict(options or {})
    if isinstance(opts.get("weights"), list):
        opts["weights"] = tuple(opts["weights"])
    run = run_evaluate(
        truth=truth,
        predictions=predictions,
        options=EvaluationOptions(**opts),
        out=out,
        mapper=task_mapper("evaluate"),
    )
    return finish(run, key="evaluation")
