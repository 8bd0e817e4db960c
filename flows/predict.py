"""Prefect flows of `histocurate predict`: one task per slide, and the model evaluation.

The model is loaded once in the flow's process and slides run as tasks on threads (the
default task runner): forward passes take turns on the device (one lock per model), while
each slide's post-processing fans out to the process pool, or to a Dask cluster when
``[predict] dask_address`` names one. The report (cells per slide and type, where the time
went, thumbnails inline) is published as artifacts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config


@flow(name="predict", log_prints=True)
def predict_flow(
    workspace: str,
    checkpoint: str,
    dataset: str | None = None,
    slides: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Predict ``slides`` (default: every slide with tiles) or a dataset's tiles."""
    from histocurate.predict.stage import run_predict

    config = load_config(workspace, overrides or {})
    run = run_predict(
        config,
        checkpoint=checkpoint,
        dataset=dataset,
        slides=slides,
        mapper=task_mapper("predict"),
        force=force,
    )
    return finish(run, key="predict")


@flow(name="evaluate-models", log_prints=True)
def evaluate_models_flow(
    workspace: str,
    models: list[str],
    dataset: str,
    overrides: dict[str, Any] | None = None,
    fold: int | None = None,
) -> Any:
    """Evaluate one or two models on a dataset (predicting its tiles when needed)."""
    from histocurate.predict.evaluate import run_model_evaluation

    config = load_config(workspace, overrides or {})
    run = run_model_evaluation(
        config, models=models, dataset=dataset, fold=fold, mapper=task_mapper("evaluate")
    )
    return finish(run, key="model-evaluation")
