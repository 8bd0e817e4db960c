"""Prefect flow of `histocurate evaluate`: the metrics as a table and a markdown artifact.

Thin: one task evaluates (reads the tables by path, counts tile by tile, bootstraps),
one writes the table; the run report carries the same tables as the terminal.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from histocurate.metrics.evaluate import Evaluation, EvaluationOptions
from histocurate.metrics.output import evaluate_files, write_evaluation
from histocurate.metrics.report import markdown


@task(name="evaluate-predictions", cache_policy=NO_CACHE)
def evaluate_task(truth: str, predictions: list[str], options: dict[str, Any]) -> Evaluation:
    """Evaluate one or two prediction tables against the truth (paths in, result out)."""
    return evaluate_files(truth, predictions, options=EvaluationOptions(**options))


@task(name="write-evaluation", cache_policy=NO_CACHE)
def write_task(evaluation: Evaluation, out: str) -> str:
    return str(write_evaluation(evaluation, out))


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    truth: str,
    predictions: list[str],
    options: dict[str, Any] | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Evaluate predictions against a truth; returns ``{"table", "notes", "out"}``."""
    opts = dict(options or {})
    if isinstance(opts.get("weights"), list):
        opts["weights"] = tuple(opts["weights"])
    evaluation = evaluate_task.submit(truth, predictions, opts).result()
    written = write_task.submit(evaluation, out).result() if out else None
    table = evaluation.table
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    create_table_artifact(
        key="evaluation-metrics",
        table=[{str(k): v for k, v in row.items()} for row in records],
        description=f"Metrics of {', '.join(evaluation.names)} against {truth}",
    )
    create_markdown_artifact(
        key="evaluation-report",
        markdown=f"# Evaluation against `{truth}`\n\n" + markdown(table, notes=evaluation.notes),
        description="Evaluation report (paper-style tables)",
    )
    return {"table": table, "notes": list(evaluation.notes), "out": written}
