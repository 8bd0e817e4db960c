"""Tasks of a stage flow: one per item, bounded, named, retried when transient, timed out.

`task_mapper` is the mapper a stage's run function gets in a flow (see `flows._stage`):
each item (a slide, a batch of tiles, a shard) is one task named ``<stage>-<item>``, at
most as many at once as the flow's thread pool has threads (the machine's CPUs by default),
``[prefect] task_workers`` or, on a GPU, one; a transient failure (`flows._retry`) is retried
with a doubling wait, never an input error; each task has the stage's timeout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows._naming import listed
from flows._retry import retry_delays, retry_transient
from histocurate.config import PrefectConfig
from histocurate.runs import ItemOutcome, ItemWork, Mapper


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


class _QuietTaskLogs(logging.Filter):
    """Drops two task-run lines that drown the stage's own messages in a run's logs: the
    "Finished in state Completed()" of every task (the run graph shows them; failures are
    still logged) and Prefect's warning, repeated for every task on a thread, that a
    timeout cannot interrupt a blocking call there (said once in the README instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return message != "Finished in state Completed()" and (
            "running in a worker thread. Timeouts in worker threads" not in message
        )


logging.getLogger("prefect.task_runs").addFilter(_QuietTaskLogs())


def _pool_size() -> int | None:
    """Threads of the current flow's task runner (None: not a thread pool, e.g. Dask)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if not isinstance(runner, ThreadPoolTaskRunner):
        return None
    size = getattr(runner, "_max_workers", None)
    return size if isinstance(size, int) and size < 10_000 else None


@task(name="item", cache_policy=NO_CACHE)
def _run_item(fn: Callable[[Any], Any], item: Any) -> Any:
    """One item of a stage (a slide, a batch of tiles, a shard)."""
    return fn(item)


def item_name(fn: Callable[[Any], Any], item: Any) -> str:
    """A task's name: ``<stage>-<item>`` for a stage's item, ``<step>-<item>`` for a step.

    >>> from functools import partial
    >>> def _scan(slide: str, *, k: int) -> str: ...
    >>> item_name(ItemWork(str, str, "tile"), "LUAD-000"), item_name(partial(_scan, k=2), "s1")
    ('tile-LUAD-000', 'scan-s1')
    """
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
