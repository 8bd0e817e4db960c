"""Prefect flow of the embed stage: one task per slide, on threads or on a Dask cluster.

Tasks get the workspace path, the slide id and the encoder name, never arrays; each
process builds the encoder once (`cached_encoder`) and writes its slides' files itself.
Inside tasks the data loader runs without worker processes by default (Dask workers are
daemonic and cannot start any; threads should not fork): the parallelism is the slides.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from histocurate.config import load_config
from histocurate.features.stage import embed_slide, encoder_for, plan_embedding


@task(name="embed-slide", cache_policy=NO_CACHE)
def embed_slide_task(
    workspace: str,
    slide_id: str,
    encoder: str,
    overrides: dict[str, Any],
    loader_workers: int,
) -> dict[str, Any]:
    """Embed one slide; the config is re-read here (tasks pass paths, not objects)."""
    config = load_config(workspace, overrides)
    outcome = embed_slide(config, slide_id, encoder=encoder, force=True, num_workers=loader_workers)
    return outcome.as_dict()


@flow(name="embed", log_prints=True)
def embed_flow(
    workspace: str,
    encoder: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    slide_ids: list[str] | None = None,
    loader_workers: int = 0,
) -> list[dict[str, Any]]:
    """Embed every slide with tiles (or ``slide_ids``); slides already done are skipped."""
    overrides = overrides or {}
    config = load_config(workspace, overrides)
    model = encoder_for(config, encoder, cached=True)
    plan = plan_embedding(config, model, force=force, slide_ids=slide_ids)
    futures = [
        embed_slide_task.submit(str(config.workspace), slide, model.name, overrides, loader_workers)
        for slide in plan.pending
    ]
    skipped = [
        {"slide_id": s, "status": "skipped", "tiles": 0, "seconds": 0.0, "error": ""}
        for s in plan.skipped
    ]
    outcomes = skipped + [future.result() for future in futures]
    _report(outcomes, model.name, model.dim, str(plan.out_dir))
    return outcomes


def _report(outcomes: list[dict[str, Any]], encoder: str, dim: int, out_dir: str) -> None:
    create_table_artifact(
        key="embed-per-slide",
        table=[
            {k: o.get(k, "") for k in ("slide_id", "status", "tiles", "seconds", "error")}
            for o in outcomes
        ],
        description=f"Tiles embedded per slide by {encoder}",
    )
    done = [o for o in outcomes if o["status"] == "done"]
    failed = [o for o in outcomes if o["status"] == "failed"]
    tiles = sum(int(o["tiles"]) for o in done)
    seconds = sum(float(o["seconds"]) for o in done)
    rate = f"{tiles / seconds:.1f} tiles/s per task" if seconds > 0 else "n/a"
    create_markdown_artifact(
        key="embed-report",
        markdown=(
            f"# Embedding with `{encoder}` ({dim} features)\n\n"
            f"{tiles} tiles from {len(done)} slides ({rate}); "
            f"{len(outcomes) - len(done) - len(failed)} skipped; {len(failed)} failed.\n\n"
            f"Output: `{out_dir}`\n\n"
            + "".join(f"- **{o['slide_id']}**: {o['error']}\n" for o in failed)
        ),
        description="Embedding run report",
    )


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


def run_embed_flow(
    workspace: str,
    *,
    encoder: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    slide_ids: list[str] | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    loader_workers: int = 0,
) -> list[dict[str, Any]]:
    """Run `embed_flow` on the chosen task runner (what the CLI calls)."""
    runner = task_runner(dask_address=dask_address, dask_workers=dask_workers)
    configured = embed_flow.with_options(task_runner=runner)
    return configured(
        workspace,
        encoder=encoder,
        overrides=overrides,
        force=force,
        slide_ids=slide_ids,
        loader_workers=loader_workers,
    )
