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
- `stage_run`: tags the run (workspace, stage, campaign: first, so that a run refused for
  its workspace or settings is found by its tags), checks the workspace parameter, loads
  the configuration, forwards histocurate's log records to the run's logs, and
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefect import Flow, flow, tags
from prefect.logging import get_run_logger
from prefect.states import Failed, State

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
from flows._tasks import machine_workers, stage_task_runner, task_mapper, uses_gpu
from histocurate.config import ENV_PREFIX, HistocurateConfig, load_config
from histocurate.errors import UserInputError
from histocurate.runs import Mapper, Report, StageRun

__all__ = [
    "artifact_key",
    "finish",
    "machine_workers",
    "run_flow",
    "stage_flow",
    "stage_run",
    "stage_task_runner",
    "task_mapper",
    "uses_gpu",
]

F = TypeVar("F", bound=Callable[..., Any])
_FROM_DEPLOYMENT: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "histocurate_from_deployment", default=None
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


_CONFIG_SOURCES = f"{ENV_PREFIX}* variables, flags)"


def for_this_run(message: str) -> str:
    """``message`` as this run's user should read it: parameter names for CLI flags when
    a deployment started the run (and a configuration error's "flags" as the run's
    parameters and overrides)."""
    if not from_deployment():
        return message
    message = message.replace(
        _CONFIG_SOURCES, f"{ENV_PREFIX}* variables of the worker, parameters/overrides)"
    )
    return name_parameters(message, _parameter_names())


def early_workspace(workspace: str | None) -> str | None:
    """The workspace a run is about, as far as its parameter says before it is checked
    (None when unset or still a deployment template): what the run is tagged with first.

    >>> early_workspace("{{ $HISTOCURATE_WORKSPACE }}"), early_workspace("")
    (None, None)
    """
    text = (workspace or "").strip()
    if not text or "{{" in text:
        return None
    return str(Path(text).expanduser().resolve())


class _ToRunLogger(logging.Handler):
    """Sends histocurate's log records to the current Prefect run's logger (so they are in
    the run's logs, once); a record from outside any run goes where it went before."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = get_run_logger()
        except Exception:  # no run in this thread (a server thread): as without Prefect
            if record.levelno >= logging.WARNING:
                logging.getLogger().handle(record)
            return
        logger.log(record.levelno, "%s: %s", record.name, record.getMessage())


@contextmanager
def _histocurate_logs() -> Iterator[None]:
    logger = logging.getLogger("histocurate")
    handler, saved = _ToRunLogger(logging.INFO), (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


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
            # tagged before the configuration is read: a run refused for its workspace or
            # its settings is found under its stage and workspace tags too
            found = stage_tags(stage, workspace=early_workspace(workspace),
                               campaign=campaign, indication=indication)  # fmt: skip
            set_run_tags_and_name(found)
            stack.enter_context(tags(*found))
            if workspace is None:  # a stage without a workspace (evaluate): defaults, env
                config = load_config(os.getcwd(), overrides or {}, require_file=False)
            else:
                config = load_config(checked_workspace(workspace), overrides or {})
            stack.enter_context(_histocurate_logs())
            yield StageContext(stage, config, gpu=bool(gpu and gpu(config)))
        except UserInputError as exc:
            exc.args = (for_this_run(str(exc)), *exc.args[1:])
            raise


def _log_run(run: StageRun, report: Report) -> None:
    logger = get_run_logger()
    for line in report.summary:
        logger.info("%s", line)
    if run.skipped:
        names = [o.item for o in run.skipped]
        logger.info("%d up to date (not redone): %s", len(names), listed(names))
    failed = {for_this_run(str(o)) for o in run.failed}
    for warning in report.warnings:
        logger.warning("%s%s", "item failed: " if warning in failed else "", warning)
    logger.info("%s: %s", run.stage, run.status_line())


def _campaign_of(run: StageRun) -> str | None:
    project = getattr(run, "project", None)
    return project if isinstance(project, str) and project else None


def finish(run: StageRun, *, key: str) -> StageRun | State:
    """Publish and log the run; end the flow Failed (run attached) when items failed."""
    from prefect.context import FlowRunContext

    report = run.report()
    report.warnings = [for_this_run(w) for w in report.warnings]
    publish(report, key=key)
    _log_run(run, report)
    context = FlowRunContext.get()
    project = _campaign_of(run)
    if context is not None and context.flow is not None and context.flow_run is not None:
        parameters = context.parameters or {}
        found = [f"campaign:{tag_value(project)}"] if project else []
        name = None
        if context.flow.flow_run_name is None:  # a plain @flow: name and tag it here
            workspace = parameters.get("workspace")
            found = stage_tags(run.stage, workspace=workspace if isinstance(workspace, str)
                               else None, campaign=project)  # fmt: skip
            name = run_name_for(context.flow.name, parameters, subject=project)
        elif project and project not in context.flow_run.name:
            name = run_name_for(context.flow.name, parameters, subject=project)
        if found or name:
            set_run_tags_and_name(found, name)
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
