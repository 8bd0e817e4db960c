"""Prefect flow of the embed stage: one task per slide, on threads or on a Dask cluster.

Tasks get the slide id and the configuration, never arrays; each process builds the
encoder once (`cached_encoder`) and writes its slides' files itself. Inside tasks the data
loader runs without worker processes by default (Dask workers are daemonic and cannot start
any; threads should not fork): the parallelism is the slides.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows._stage import finish, task_mapper
from histocurate.config import load_config
from histocurate.features.stage import run_embed


@flow(name="embed", log_prints=True)
def embed_flow(
    workspace: str,
    encoder: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    slide_ids: list[str] | None = None,
    loader_workers: int = 0,
) -> Any:
    """Embed every slide with tiles (or ``slide_ids``); slides already done are skipped."""
    config = load_config(workspace, overrides or {})
    run = run_embed(
        config,
        mapper=task_mapper("embed"),
        encoder=encoder,
        force=force,
        slide_ids=slide_ids,
        loader_workers=loader_workers,
    )
    return finish(run, key="embed")


def task_runner(*, dask_address: str | None = None, dask_workers: int | None = None) -> Any:
    """Threads by default; a Dask cluster at ``dask_address``; or a local one of
    ``dask_workers`` single-threaded worker processes."""
    if dask_address or dask_workers:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner()


def embed_flow_on(*, dask_address: str | None = None, dask_workers: int | None = None) -> Any:
    """`embed_flow` on the chosen task runner (what the CLI runs)."""
    runner = task_runner(dask_address=dask_address, dask_workers=dask_workers)
    return embed_flow.with_options(task_runner=runner)
