"""Prefect flows of `histocurate predict`: one task per slide, the nightly run over new
slides, and the model evaluation (`histocurate evaluate --model`).

The model is loaded once in the flow's process; slides are tasks on its threads, one at a
time on a GPU (`flows._stage`), so the device runs one slide's batches after the other
while each slide's post-processing fans out to the process pool, or to a Dask cluster when
``[predict] dask_address`` names one. The report (cells per slide and type, where the time
went, thumbnails inline) is published as artifacts, as the CLI prints it.

On Dask, as the embed flow: `predict_flow_on` takes embed's choice (`flows.embed.task_runner`:
a scheduler at ``dask_address``, or a local cluster of ``dask_workers`` processes that the
task runner starts) and runs `predict_flow` on that `DaskTaskRunner`. Only the CPU part goes
there: the flow asks its runner for the cluster (starting it then, once the workspace and
checkpoint are checked) and makes the scheduler's address the run's ``[predict]
dask_address`` (over the workspace's), so each window's post-processing is a job on that
cluster, sent by the run's own client (`DaskExecutor`, closed when the run ends; the task
runner closes its client, and a cluster it started, when the flow ends). The slide tasks
stay on a thread pool of the flow's process (one model, one device), not on Dask workers:
no second cluster, no model per worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Annotated, Any

from pydantic import Field

from flows._params import Amount, Count, Device, Precision, checked_checkpoint, settings
from flows._pipeline import pipeline_run
from flows._stage import stage_flow, stage_run, stage_task_runner, uses_gpu
from histocurate.config import HistocurateConfig


def _gpu(config: HistocurateConfig) -> bool:
    return uses_gpu(config.predict.device)


def _dask_runner() -> Any:
    """The flow's `DaskTaskRunner` (None: the flow runs on threads)."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    return runner if isinstance(runner, DaskTaskRunner) else None


@contextmanager
def _tasks_on_threads() -> Iterator[None]:
    """Tasks submitted inside run on a thread pool of the flow's process (the machine's
    CPUs, as every flow's default), not on the flow's task runner."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    assert context is not None  # a flow's body
    with stage_task_runner() as threads, context.model_copy(update={"task_runner": threads}):
        yield


@stage_flow("predict")
def predict_flow(
    workspace: str,
    checkpoint: str,
    dataset: str | None = None,
    slides: list[str] | None = None,
    device: Device | None = None,
    batch_size: Count | None = None,
    precision: Precision | None = None,
    workers: Amount | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Predict ``slides`` (every slide with tiles when empty) or a dataset's tiles.

    On a Dask task runner (`predict_flow_on`) the windows' post-processing runs on its
    cluster and the slides on threads of the flow's process (see the module docstring).

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        checkpoint: Checkpoint file (ours or a bare HistoPLUS state dict), or a run name
            under the workspace's runs/.
        dataset: Dataset NAME[@VERSION]: predict its tiles (stored beside it).
        slides: Slide ids. Empty: every slide with tiles (those up to date are skipped).
        device: auto (cuda when present), cpu, cuda or cuda:N. Empty: [predict] (auto).
        batch_size: Windows per forward pass. Empty: [predict] (8).
        precision: auto, bf16, fp16 or fp32. Empty: [predict] (auto).
        workers: Post-processing processes (0: in the flow's process). Empty: CPUs - 1.
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"predict": {"window_um": 196}}.
        force: Redo predictions that are up to date.
    """
    from histocurate.predict.stage import run_predict

    typed = {"device": device, "batch_size": batch_size, "precision": precision,
             "workers": workers}  # fmt: skip
    with stage_run("predict", workspace, settings({"predict": typed}, overrides),
                   gpu=_gpu) as stage:  # fmt: skip
        checkpoint = checked_checkpoint(checkpoint)  # before any work: '' is no checkpoint
        config, dask = stage.config, _dask_runner()
        if dask is not None:  # the runner's cluster (started now) does the post-processing
            address = str(dask.client.scheduler.address)
            config = config.model_copy(
                update={"predict": config.predict.model_copy(update={"dask_address": address})}
            )
        with _tasks_on_threads() if dask is not None else nullcontext():
            run = run_predict(config, checkpoint=checkpoint, dataset=dataset, slides=slides,
                              mapper=stage.mapper, progress=stage.progress,
                              force=force)  # fmt: skip
        return stage.finish(run, key="predict")


def predict_flow_on(*, dask_address: str | None = None, dask_workers: int | None = None) -> Any:
    """`predict_flow` on the embed flow's task runner choice: threads (neither given), the
    Dask scheduler at ``dask_address``, or a local cluster of ``dask_workers`` single-threaded
    processes started by the runner. On Dask the post-processing goes to that cluster and
    the slides stay in the flow's process (see the module docstring)."""
    from flows.embed import task_runner

    runner = task_runner(dask_address=dask_address, dask_workers=dask_workers)
    return predict_flow.with_options(task_runner=runner)


@stage_flow("predict-new-slides")
def predict_new_slides_flow(
    workspace: str, checkpoint: str, overrides: dict[str, Any] | None = None
) -> Any:
    """Tile the slides new to the manifest, then predict every slide not yet predicted by
    ``checkpoint`` (or predicted before it was saved): a nightly run does only the new.

    One parent run with the tile and predict stages as subflows under one ``group:`` tag.
    A slide that fails to tile does not keep the others from being predicted; the run then
    ends Failed, its message naming the failed stages and their slides.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        checkpoint: Checkpoint file, or a run name under the workspace's runs/ (its best.pt).
        overrides: Any other setting, nested like histocurate.toml (given to both stages).
    """
    from flows.tile import tile_flow

    with pipeline_run("predict-new-slides", workspace, keep_going=True) as pipeline:
        checkpoint = checked_checkpoint(checkpoint)  # refused before tiling, not after
        pipeline.run("tile", tile_flow, workspace=workspace, overrides=overrides)
        pipeline.run("predict", predict_flow, workspace=workspace, checkpoint=checkpoint,
                     overrides=overrides)  # fmt: skip
        return pipeline.finish()


@stage_flow("evaluate-models")
def evaluate_models_flow(
    workspace: str,
    models: Annotated[list[str], Field(min_length=1, max_length=2)],
    dataset: str,
    fold: Amount | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Evaluate one or two models on a dataset, predicting its tiles when needed.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        models: One model (run name or checkpoint), or two side by side with p-values.
        dataset: Dataset NAME[@VERSION] whose nuclei are the truth.
        fold: Evaluate this fold only. Empty: the fold the first model's training held
            out, else every tile.
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"evaluate": {"bootstrap": 1000}}.
    """
    from histocurate.predict.evaluate import run_model_evaluation

    with stage_run("evaluate", workspace, overrides) as stage:
        run = run_model_evaluation(stage.config, models=models, dataset=dataset, fold=fold,
                                   mapper=stage.mapper, progress=stage.progress)  # fmt: skip
        return stage.finish(run, key="model-evaluation")
