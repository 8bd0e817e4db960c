"""The shared flow layer: what turns a stage's run function into a Prefect flow.

A stage flow is `stage_flow` + `stage_run` + ``finish``, nothing else::

    @stage_flow("tile")
    def tile_flow(workspace: str, tissue_threshold: Fraction | None = None,
                  overrides: dict[str, Any] | None = None, force: bool = False) -> Any:
        typed = settings({"tiling": {"tissue_threshold": tissue_threshold}}, overrides)
        with stage_run("tile", workspace, typed) as stage:
            run = run_tile(stage.config, mapper=stage.mapper, progress=stage.progress)
            return stage.finish(run, key="tile")

- `stage_flow`: a readable run name (`flows._naming`), a thread pool sized to the machine,
  the failure hook (`flows._hooks`), parameters validated before the run.
- `stage_run`: checks the workspace parameter, loads the configuration, tags the run
  (workspace, stage, campaign), forwards histocurate's log records to the run's logs, and
  rewrites CLI flags in error messages to parameter names when a deployment started the run.
- `task_mapper`: each item of the stage as one task named after the item (slide, tiles,
  shard), at most ``[prefect] task_workers`` at a time (one on a GPU), retried with a
  doubling wait when it failed transiently (`flows._retry`), with a timeout per stage.
- `finish`: publishes the run's `Report` (the one the CLI prints: `flows._artifacts`), logs
  what was done, up to date and failed, and ends the flow Failed with the failures in the
  state message when items failed (the run object attached, so `run_flow` returns it).
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect import Flow, flow, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows._artifacts import ArtifactProgress, artifact_key, publish
from flows._hooks import on_stage_failure
from flows._naming import (
    listed,
    run_name,
    run_name_for,
    set_run_tags_and_name,
    stage_tags,
    tag_value,
)
from flows._params import checked_workspace, name_parameters
from flows._retry import retry_delays, retry_transient
from histocurate.config import HistocurateConfig, PrefectConfig, load_config
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome, ItemWork, Mapper, StageRun

__all__ = ["artifact_key", "finish", "run_flow", "stage_flow", "stage_run", "task_mapper"]

F = TypeVar("F", bound=Callable[..., Any])
_FROM_DEPLOYMENT: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "histocurate_from_deployment", default=None
)


def machine_workers() -> int:
    """CPUs this process may use (the default size of every flow's thread pool)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def stage_task_runner() -> ThreadPoolTaskRunner:
    """Threads, as many as the machine's CPUs (or Prefect's
    ``PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS`` when set)."""
    from prefect.settings import PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS

    return ThreadPoolTaskRunner(
        max_workers=PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS.value() or machine_workers()
    )


def stage_flow(name: str, **options: Any) -> Callable[[F], Flow[..., Any]]:
    """``@flow`` as every histocurate flow uses it (see the module docstring)."""

    def decorate(fn: F) -> Flow[..., Any]:
        return flow(
            name=name,
            flow_run_name=run_name,
            log_prints=True,
            task_runner=stage_task_runner(),  # type: ignore[arg-type]
            validate_parameters=True,
            on_failure=[on_stage_failure],
            on_crashed=[on_stage_failure],
            **options,
        )(fn)

    return decorate


def from_deployment() -> bool:
    """Whether this run, or the run it is a stage of, was started by a deployment."""
    inherited = _FROM_DEPLOYMENT.get()
    if inherited is not None:
        return inherited
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def _parameter_names() -> set[str]:
    import inspect

    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None:
        return set()
    return set(inspect.signature(context.flow.fn).parameters)


def for_this_run(message: str) -> str:
    """``message`` as this run's user should read it: parameter names for CLI flags when
    a deployment started the run."""
    return name_parameters(message, _parameter_names()) if from_deployment() else message


class _ToRunLogger(logging.Handler):
    """Forwards histocurate's log records to the current Prefect run's logger."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = get_run_logger()
        except Exception:  # no run here (a thread outside Prefect): nothing to forward to
            return
        logger.log(record.levelno, "%s: %s", record.name, record.getMessage())


@contextmanager
def _histocurate_logs() -> Iterator[None]:
    logger = logging.getLogger("histocurate")
    handler, level = _ToRunLogger(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _NoThreadTimeoutWarning(logging.Filter):
    """Drops Prefect's warning, repeated for every task run on a thread, that a timeout
    cannot interrupt a blocking call there (documented once in the README instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread. Timeouts in worker threads" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_NoThreadTimeoutWarning())


def _pool_size() -> int | None:
    """Threads of the current flow's task runner (None: not a thread pool, e.g. Dask)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    size = (
        getattr(runner, "_max_workers", None) if isinstance(runner, ThreadPoolTaskRunner) else None
    )
    return size if isinstance(size, int) and size < 10_000 else None


@task(name="item", cache_policy=NO_CACHE)
def _run_item(fn: Callable[[Any], Any], item: Any) -> Any:
    """One item of a stage (a slide, a batch of tiles, a shard)."""
    return fn(item)


def item_name(fn: Callable[[Any], Any], item: Any) -> str:
    """A task's name: ``<stage>-<item>`` (``tile-LUAD-000``, ``scan-LUAD-000``)."""
    if isinstance(fn, ItemWork):
        return f"{fn.stage}-{fn.name_of(item)}"
    inner = getattr(fn, "func", fn)
    step = getattr(inner, "__name__", "step").strip("_")
    return f"{step}-{getattr(item, 'slide_id', None) or item}"


def _timed_out(exc: BaseException) -> bool:
    from prefect.task_engine import TaskRunTimeoutError

    return isinstance(exc, TaskRunTimeoutError)


def task_mapper(
    stage: str, policy: PrefectConfig | None = None, *, limit: int | None = None
) -> Mapper:
    """A mapper that runs each item as a task, at most ``limit`` at a time, results in order.

    ``policy`` (``[prefect]``): retries of transient failures, their first wait, the timeout
    of one task of ``stage`` and, without ``limit``, how many run at once. For an `ItemWork`
    the task runs the bare work, so a failure shows as a failed task with its traceback;
    the mapper then turns it into the item's failed outcome and the other items go on.
    """
    policy = policy or PrefectConfig.model_validate({})
    window = limit or policy.task_workers
    timeout = policy.timeout_s(stage)
    runner = _run_item.with_options(
        retries=policy.retries,
        retry_delay_seconds=retry_delays(policy.retries, policy.retry_delay_s),
        retry_condition_fn=retry_transient,
        timeout_seconds=timeout,
        tags=[f"histocurate-{stage}"],
    )

    def outcome(fn: Callable[[Any], Any], item: Any, future: PrefectFuture[Any]) -> Any:
        try:
            return future.result()
        except Exception as exc:
            if not isinstance(fn, ItemWork):
                raise
            if _timed_out(exc):
                return ItemOutcome(fn.name_of(item), "failed", seconds=timeout or 0.0,
                                   error=f"timed out after {timeout:.0f} s ([prefect] "
                                   f"timeouts_s.{stage})")  # fmt: skip
            return fn.failure(item, exc)

    def mapper(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        work = fn.fn if isinstance(fn, ItemWork) else fn
        limits = [n for n in (window, _pool_size()) if n]
        size = min([len(items), *limits]) if items else 0
        names = [item_name(fn, item) for item in items]
        if items:
            get_run_logger().info("%s: %d task(s), %d at a time: %s", stage, len(items), size,
                                  listed(names, 8))  # fmt: skip
        futures: list[PrefectFuture[Any]] = []
        running: set[PrefectFuture[Any]] = set()

        def top_up() -> None:
            while len(futures) < len(items) and len(running) < size:
                named = runner.with_options(task_run_name=names[len(futures)])
                futures.append(named.submit(work, items[len(futures)]))
                running.add(futures[-1])

        for index, item in enumerate(items):
            top_up()
            while futures[index] in running:  # wait for any task; start the next ones
                running.discard(next(iter(as_completed(list(running)))))
                top_up()
            yield outcome(fn, item, futures[index])

    mapper.__name__ = f"{stage}_task_mapper"
    return mapper


def uses_gpu(device: str) -> bool:
    """Whether a torch device setting runs on a GPU here ('auto': when CUDA is present)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass
class StageContext:
    """What `stage_run` gives a flow body: the configuration, the mapper, the progress."""

    stage: str
    config: HistocurateConfig
    gpu: bool = False
    progress: ArtifactProgress = field(init=False)
    mapper: Mapper = field(init=False)

    def __post_init__(self) -> None:
        self.progress = ArtifactProgress(self.stage)
        self.mapper = task_mapper(self.stage, self.config.prefect, limit=1 if self.gpu else None)

    def finish(self, run: StageRun, *, key: str) -> StageRun | State:
        return finish(run, key=key)


@contextmanager
def stage_run(
    stage: str,
    workspace: str | None,
    overrides: dict[str, Any] | None = None,
    *,
    campaign: str | None = None,
    indication: str | None = None,
    gpu: Callable[[HistocurateConfig], bool] | None = None,
) -> Iterator[StageContext]:
    """The frame of a stage flow's body (see the module docstring)."""
    with ExitStack() as stack:
        if _FROM_DEPLOYMENT.get() is None:
            token = _FROM_DEPLOYMENT.set(from_deployment())
            stack.callback(_FROM_DEPLOYMENT.reset, token)
        try:
            if workspace is None:  # a stage without a workspace (evaluate): defaults, env
                config = load_config(os.getcwd(), overrides or {}, require_file=False)
            else:
                config = load_config(checked_workspace(workspace), overrides or {})
            found = stage_tags(stage, workspace=workspace and str(config.workspace),
                               campaign=campaign, indication=indication)  # fmt: skip
            set_run_tags_and_name(found)
            stack.enter_context(tags(*found))
            stack.enter_context(_histocurate_logs())
            yield StageContext(stage, config, gpu=bool(gpu and gpu(config)))
        except UserInputError as exc:
            exc.args = (for_this_run(str(exc)), *exc.args[1:])
            raise


def _log_run(run: StageRun) -> None:
    logger = get_run_logger()
    report = run.report()
    for line in report.summary:
        logger.info("%s", line)
    if run.skipped:
        names = [o.item for o in run.skipped]
        logger.info("%d up to date (not redone): %s", len(names), listed(names))
    failed = {str(o) for o in run.failed}
    for warning in report.warnings:
        logger.warning("%s%s", "item failed: " if warning in failed else "", for_this_run(warning))
    logger.info("%s: %s", run.stage, run.status_line())


def _campaign_of(run: StageRun) -> str | None:
    project = getattr(run, "project", None)
    return project if isinstance(project, str) and project else None


def finish(run: StageRun, *, key: str) -> StageRun | State:
    """Publish and log the run; end the flow Failed (run attached) when items failed."""
    from prefect.context import FlowRunContext

    publish(run.report(), key=key)
    _log_run(run)
    context = FlowRunContext.get()
    project = _campaign_of(run)
    if context is not None and context.flow is not None and context.flow_run and project:
        name = None
        if project not in context.flow_run.name:
            name = run_name_for(context.flow.name, context.parameters or {}, subject=project)
        set_run_tags_and_name([f"campaign:{tag_value(project)}"], name)
    if run.failed:
        listed = "; ".join(for_this_run(line) for line in run.failure_lines()[:5])
        more = f" (and {len(run.failed) - 5} more)" if len(run.failed) > 5 else ""
        return Failed(message=f"{len(run.failed)} item(s) failed: {listed}{more}", data=run)
    return run


def run_flow(flow_fn: Any, /, **parameters: Any) -> Any:
    """Call a flow in-process; return its run object even when the flow ended Failed
    because of failed items; re-raise an error that stopped the flow itself."""
    state = flow_fn(**parameters, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return data
