"""Prefect flow of `histocurate train`: one task per held-out fold, or one torchrun launch.

Thin wiring over `histocurate.training.stage.run_train`: with ``nproc`` 1 each fold's run is
a task (one at a time on a GPU); with ``nproc`` > 1 one task runs ``torchrun
--nproc-per-node N -m histocurate train ...`` on this worker (a GPU machine: the deployment
``train-gpu`` goes to the ``histocurate-gpu`` pool) and the outcomes are read back from the
run folders. Either way the report is the CLI's: the runs table, each run's validation
table and per-class F1 as table artifacts, the loss/validation curves inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from flows._params import Amount, Count, Device, Positive, Precision, settings
from flows._stage import stage_flow, stage_run, uses_gpu
from histocurate.config import HistocurateConfig
from histocurate.training.stage import TrainRun, run_train

Preset = Literal["paper", "cellvit", "tiny"]


def _gpu(config: HistocurateConfig) -> bool:
    return uses_gpu(config.train.device)


def _torchrun(
    config: HistocurateConfig, nproc: int, arguments: list[str], folds: list[int], base: str
) -> TrainRun:
    from histocurate.runs import ItemOutcome, ItemWork, run_items
    from histocurate.training.launch import launch, outcome_of
    from histocurate.training.resume import runs_root

    root = runs_root(config)
    names = [base if len(folds) == 1 else f"{base}-f{k}" for k in folds]

    def once(_: str) -> ItemOutcome:
        launch(nproc, [*arguments, "--run-name", base, "-w", str(config.workspace)], cwd=Path.cwd())
        return ItemOutcome("torchrun", "done")

    work = ItemWork(once, str, "train")
    outcomes = run_items(work, ["torchrun"])
    if outcomes[0].status == "failed":
        return TrainRun(outcomes=outcomes, runs=[root / n for n in names])
    found = [outcome_of(root / n, k) for n, k in zip(names, folds, strict=True)]
    return TrainRun(outcomes=found, runs=[root / n for n in names])


@stage_flow("train")
def train_flow(
    workspace: str,
    dataset: str | None = None,
    fold: Amount | None = None,
    cv: bool = False,
    preset: Preset | None = None,
    epochs: Count | None = None,
    batch_size: Count | None = None,
    precision: Precision | None = None,
    device: Device | None = None,
    max_minutes: Positive | None = None,
    label_sets: bool | None = None,
    resume: str | None = None,
    run: str | None = None,
    nproc: Count = 1,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Train CellViT (HistoPLUS) on a dataset of the workspace: runs/<run>/ per fold.

    Args:
        workspace: The workspace folder (holds histocurate.toml).
        dataset: Dataset NAME[@VERSION] (latest version by default).
        fold: The held-out (validation) fold; the other folds train.
        cv: One run per fold, each held out in turn (instead of fold).
        preset: paper, cellvit or tiny ([train] preset, else paper).
        epochs: Epochs (the preset's by default).
        batch_size: Global batch (all processes).
        precision: auto (bf16 where the GPU has it, fp16 + loss scaling otherwise, fp32 on
            the CPU), bf16, fp16 or fp32.
        device: auto, cpu, cuda or cuda:N.
        max_minutes: Time budget: validate, save and stop after it.
        label_sets: Train the type head on the label sets of undetermined nuclei.
        resume: Continue this run (a folder under runs/) exactly.
        run: Name of the run folder (default: dataset, fold, preset and time).
        nproc: Processes (GPUs) of one run: above 1, a torchrun launch on this worker.
        overrides: Any other [train] key, nested like histocurate.toml.
    """
    typed = settings(
        {
            "train": {
                "epochs": epochs,
                "batch_size": batch_size,
                "precision": precision,
                "device": device,
                "max_minutes": max_minutes,
                "label_sets": label_sets,
            }
        },
        overrides,
    )
    with stage_run("train", workspace, typed, gpu=_gpu) as stage:
        if nproc > 1:
            from histocurate.training.inputs import resolve, validation_folds
            from histocurate.training.resume import run_name

            if resume is not None or dataset is None:
                raise ValueError("a torchrun launch needs dataset and fold/cv, not resume")
            choice = resolve(stage.config, dataset)
            folds = validation_folds(choice, fold, cv)
            name = preset or stage.config.train.preset
            base = run or run_name(choice, folds[0], name, None).replace(f"-f{folds[0]}", "")
            arguments = ["--dataset", choice.spec, *(["--cv"] if cv else ["--fold", str(fold)])]
            arguments += ["--preset", name, *_flags(typed.get("train", {}))]
            result = _torchrun(stage.config, nproc, arguments, folds, base)
            result.dataset = choice.spec
        else:
            result = run_train(
                stage.config,
                dataset=dataset,
                fold=fold,
                cv=cv,
                preset=preset,
                resume=resume,
                run=run,
                mapper=stage.mapper,
                progress=stage.progress,
            )
        return stage.finish(result, key="train")


def _flags(section: dict[str, Any]) -> list[str]:
    """[train] overrides as CLI flags for the torchrun'd command."""
    out: list[str] = []
    for key, value in section.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(
                flag
                if value
                else {"label_sets": "--ignore-undetermined"}.get(
                    key, "--no-" + key.replace("_", "-")
                )
            )
        elif value is not None:
            out += [flag, str(value)]
    return out
