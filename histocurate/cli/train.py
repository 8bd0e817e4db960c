"""`histocurate train`: CellViT (HistoPLUS) training on a curated dataset.

Several GPUs: ``torchrun --nproc-per-node N -m histocurate train ...`` (every process runs
this command; rank 0 shows the progress and prints the report).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    err_console,
    finish_run,
    flag_overrides,
    run_stage,
    use_prefect,
)

if TYPE_CHECKING:
    from histocurate.training.stage import TrainRun


class TrainProgress:
    """A rich bar of optimiser steps with the loss and images/s (one bar per run)."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[ips]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, total: int, description: str) -> None:
        self._task = self._bar.add_task(description, total=total, epoch="-", loss="-", ips="-")

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)

    def stats(self, *, loss: float, images_per_s: float, epoch: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, loss=f"{loss:.4f}", ips=f"{images_per_s:.1f}", epoch=epoch)


Precision = Literal["auto", "bf16", "fp16", "fp32"]
Preset = Literal["paper", "cellvit", "tiny"]


@app.command()
def train(
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset NAME[@VERSION] of the workspace (latest version by default)."),
    ] = None,
    fold: Annotated[
        int | None, typer.Option(help="Held-out fold (validation); the others train.")
    ] = None,
    cv: Annotated[
        bool, typer.Option("--cv", help="One run per fold, each held out in turn.")
    ] = False,
    preset: Annotated[
        Preset | None, typer.Option(help="paper, cellvit or tiny ([train] preset, else paper).")
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="h0-mini, phikon or timm:<name>.")] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Encoder weights (file or folder), or a "
            "CellViT / HistoPLUS checkpoint to fine-tune."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Global batch.")] = None,
    micro_batch: Annotated[
        int | None, typer.Option(min=1, help="Tiles per process and pass (gradient accumulation).")
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            help="auto: bf16 where the GPU has it, fp16 + loss scaling otherwise, fp32 on the CPU."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue run RUN (folder under runs/) exactly.")
    ] = None,
    run_name: Annotated[
        str | None,
        typer.Option(
            "--run-name", help="Run folder name (default: dataset, fold, preset and time)."
        ),
    ] = None,
    label_sets: Annotated[
        bool | None,
        typer.Option(
            "--label-sets/--ignore-undetermined",
            help="Train NT on the label sets of undetermined nuclei, or ignore them (the paper).",
            show_default=False,
        ),
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Time budget: validate, save and stop after it.")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Loader processes.")] = None,
    val_every: Annotated[int | None, typer.Option(min=1, help="Validate every N epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Learning rate.")] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the model.", show_default=False),
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="Channels-last memory (default: on; measured faster on the CPU).",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOption = Path("."),
    prefect: PrefectOption = None,
) -> None:
    """Train CellViT (HistoPLUS: H0-mini encoder) on a dataset: runs/<run>/ with last.pt,
    best.pt (best validation bPQ), metrics.parquet, curves.png and config.json."""
    from histocurate.cellvit.distributed import torchrun_world

    section: dict[str, Any] = {
        "encoder": encoder,
        "weights": weights,
        "epochs": epochs,
        "batch_size": batch_size,
        "micro_batch": micro_batch,
        "precision": precision,
        "device": device,
        "label_sets": label_sets,
        "max_minutes": max_minutes,
        "workers": workers,
        "val_every": val_every,
        "seed": seed,
        "lr": lr,
        "compile": compile,
        "channels_last": channels_last,
    }
    overrides = flag_overrides({"train": section})
    config = config_for(workspace, overrides)
    rank, world, _ = torchrun_world()
    if world > 1 and use_prefect(prefect):
        raise typer.BadParameter("under torchrun, run without --prefect", param_hint="--prefect")
    parameters = {
        "workspace": str(config.workspace),
        "dataset": dataset,
        "fold": fold,
        "cv": cv,
        "preset": preset,
        "resume": resume,
        "run": run_name,
        "overrides": overrides,
    }

    def local(_: Any) -> TrainRun:
        from histocurate.training.stage import run_train

        if rank:
            return run_train(
                config,
                dataset=dataset,
                fold=fold,
                cv=cv,
                preset=preset,
                resume=resume,
                run=run_name,
            )
        with TrainProgress() as progress:
            return run_train(
                config,
                dataset=dataset,
                fold=fold,
                cv=cv,
                preset=preset,
                resume=resume,
                run=run_name,
                progress=progress,
            )

    result = run_stage("train:train_flow", False if world > 1 else prefect, local, **parameters)
    if rank:
        if result.exit_code:
            raise typer.Exit(code=result.exit_code)
        return
    finish_run(result)
