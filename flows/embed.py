"""Prefect flow of the embed stage: one task per slide, on threads or on a Dask cluster.

Tasks get the slide id and the configuration, never arrays; each process builds the
encoder once (`cached_encoder`) and writes its slides' files itself. Inside tasks the data
loader runs without worker processes by default (Dask workers are daemonic and cannot start
any; threads should not fork): the parallelism is the slides. On a GPU the slides run one
at a time (one encoder, one device).
"""

from __future__ import annotations

from typing import Any

from flows._params import Count, Device, EncoderName, Precision, checked_workspace, settings
from flows._stage import stage_flow, stage_run, stage_task_runner, uses_gpu
from histocurate.config import HistocurateConfig, load_config
from histocurate.errors import UserInputError
from histocurate.features.stage import run_embed

_WEIGHT_FIELDS = {"phikon": "phikon_weights", "h0-mini": "h0_mini_weights"}


def weights_field(encoder: str) -> str:
    """The [features] key holding the weights of ``encoder``."""
    field = _WEIGHT_FIELDS.get(encoder, "timm_weights" if encoder.startswith("timm:") else "")
    if not field:
        raise UserInputError(f"weights: encoder {encoder!r} takes no weights")
    return field


def _on_gpu(config: HistocurateConfig) -> bool:
    return config.features.encoder != "builtin" and uses_gpu(config.features.device)


@stage_flow("embed")
def embed_flow(
    workspace: str,
    encoder: EncoderName | None = None,
    weights: str | None = None,
    device: Device | None = None,
    batch_size: Count | None = None,
    precision: Precision | None = None,
    slide_ids: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    loader_workers: int = 0,
) -> Any:
    """Embed every slide with tiles (or ``slide_ids``); slides already done are skipped.

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        encoder: builtin (no weights), phikon, h0-mini or timm:<model name>. Empty: the
            workspace's [features] (builtin).
        weights: Weights of the encoder on the worker: file, model folder or Hugging Face
            cache folder. Empty: the workspace's [features] setting for that encoder.
        device: auto (GPU when present), cpu, cuda or cuda:N. Empty: the workspace's.
        batch_size: Tiles per forward pass. Empty: the workspace's (64).
        precision: auto (bf16 on GPU), bf16, fp16 or fp32. Empty: the workspace's.
        slide_ids: Only these slides. Empty: every slide with tiles.
        overrides: Any other setting, nested like histocurate.toml, e.g.
            {"features": {"hf_cache": "/models/hf"}}.
        force: Recompute slides already done.
        loader_workers: Data-loader processes per task (0: read in the task's thread).
    """
    typed: dict[str, Any] = {"encoder": encoder, "device": device, "batch_size": batch_size,
                             "precision": precision}  # fmt: skip
    if weights is not None:  # the weights of the encoder that will run
        chosen = encoder or load_config(checked_workspace(workspace), overrides).features.encoder
        typed[weights_field(chosen)] = weights
    with stage_run("embed", workspace, settings({"features": typed}, overrides),
                   gpu=_on_gpu) as stage:  # fmt: skip
        run = run_embed(
            stage.config,
            mapper=stage.mapper,
            progress=stage.progress,
            force=force,
            slide_ids=slide_ids,
            loader_workers=loader_workers,
        )
        return stage.finish(run, key="embed")


def task_runner(*, dask_address: str | None = None, dask_workers: int | None = None) -> Any:
    """Threads sized to the machine by default; a Dask cluster at ``dask_address``; or a
    local one of ``dask_workers`` single-threaded worker processes."""
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
    return stage_task_runner()


def embed_flow_on(*, dask_address: str | None = None, dask_workers: int | None = None) -> Any:
    """`embed_flow` on the chosen task runner (what the CLI runs)."""
    runner = task_runner(dask_address=dask_address, dask_workers=dask_workers)
    return embed_flow.with_options(task_runner=runner)
