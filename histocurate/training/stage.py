"""The train stage: `run_train(config, *, dataset, fold | cv, ...) -> TrainRun`.

It resolves the dataset version in the workspace, checks the folds, makes the preset's
settings (flags and ``[train]`` override them), names the run folders, and trains one run
per held-out fold (``--fold K``: one; ``--cv``: every fold), each an item through
``mapper`` (Prefect: one task per fold). Under ``torchrun`` every process calls it: rank 0
names the runs and writes their files, all ranks train (`histocurate.cellvit.train`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from histocurate.cellvit.distributed import broadcast_object, init_distributed
from histocurate.cellvit.presets import preset as make_settings
from histocurate.cellvit.presets import settings_from
from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, Report, StageRun, run_items
from histocurate.training.inputs import DatasetChoice, patch_of, resolve, validation_folds
from histocurate.training.resume import resume_run, run_name, runs_root


@dataclass(frozen=True)
class FoldPlan:
    """One run to train (picklable: it crosses task boundaries)."""

    fold: int
    run_dir: Path
    settings: dict[str, Any]
    choice: DatasetChoice
    device: str
    weights: Path | None = None
    hf_cache: Path | None = None
    new_classes: bool = False
    resume: bool = False


def _fold_name(plan: FoldPlan) -> str:
    return f"fold {plan.fold}"


@dataclass
class TrainRun(StageRun):
    """The runs trained (one per held-out fold) and where they are."""

    stage: ClassVar[str] = "train"
    dataset: str = ""
    runs: list[Path] = field(default_factory=list)
    is_main: bool = True

    def report(self) -> Report:
        from histocurate.cellvit.rundir import MetricsLog, RunDir, validation_table

        rows, per_class = [], {}
        for o in self.outcomes:
            x = dict(o.extra)
            val = x.get("validation") or {}
            rows.append(
                {
                    "fold": o.item,
                    "status": x.get("status", o.status),
                    "epochs": x.get("epochs"),
                    "steps": o.count,
                    "images/s": x.get("images_per_s"),
                    "best bPQ": x.get("best_bpq"),
                    "best epoch": x.get("best_epoch"),
                    "bPQ": val.get("bpq"),
                    "DQ": val.get("dq"),
                    "SQ": val.get("sq"),
                    "mF1": val.get("mf1"),
                }
            )
            f1 = {
                k.removeprefix("f1_"): v
                for k, v in val.items()
                if k.startswith("f1_") and k != "f1_detection"
            }
            if f1:
                per_class[o.item] = f1
        tables: dict[str, pd.DataFrame] = {}
        images = []
        for path in self.runs:
            run = RunDir(path)
            if run.metrics_path.exists():
                log = MetricsLog(run)
                log.resume(10**18)
                table = validation_table(log.frame())
                shown = [c for c in SHOWN if c in table.columns]
                tables[f"validation {run.name}"] = table[shown]
            if run.curves.exists():
                images.append(run.curves)
        if per_class:
            frame = pd.DataFrame(per_class)
            tables["per-class F1 (last validation)"] = frame.rename_axis("class").reset_index()
        done = [o for o in self.outcomes if o.status == "done"]
        summary = [
            f"dataset {self.dataset}: {len(done)} run(s) trained, "
            f"{len(self.failed)} failed ({self.seconds:.1f} s)"
        ]
        summary += [f"run folder: {p}" for p in self.runs]
        return Report(
            title="train",
            summary=summary,
            table=pd.DataFrame(rows),
            tables=tables,
            warnings=self.failure_lines(),
            images=images,
        )


SHOWN = ("epoch", "step", "bpq", "dq", "sq", "pq_pooled", "f1_detection", "mf1")


def train_fold(plan: FoldPlan, *, progress: Progress | None = None) -> ItemOutcome:
    """Train (or resume) one run; its outcome carries the run's numbers."""
    from histocurate.cellvit.checkpoint import load_checkpoint
    from histocurate.cellvit.finetune import new_model
    from histocurate.cellvit.model import CellViT
    from histocurate.cellvit.rundir import RunDir, read_state
    from histocurate.cellvit.train import Trainer
    from histocurate.training.finetune import finetune_model, is_cellvit_checkpoint
    from histocurate.training.inputs import train_data
    from histocurate.training.metrics import ProjectMetrics

    start = time.perf_counter()
    ctx = init_distributed(plan.device)
    settings = settings_from(plan.settings)
    choice, run = plan.choice, RunDir(plan.run_dir)
    others = [f for f in choice.folds if f != plan.fold]
    record: dict[str, Any] = {
        "run": run.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": plan.settings,
        "dataset": choice.record(),
        "fold": plan.fold,
        "train_folds": others,
        "classes": list(choice.class_ids),
        "weights": None if plan.weights is None else str(plan.weights),
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "versions": _versions(),
    }
    model: CellViT | None = None
    state = None
    if plan.resume:
        state = read_state(run.last)["training"]
        model = load_checkpoint(run.last)[0].train()
    elif plan.weights is not None and is_cellvit_checkpoint(plan.weights):
        model, mapping, mpp = finetune_model(
            plan.weights, choice.class_ids, new_classes=plan.new_classes
        )
        record["finetune"] = {
            "checkpoint": str(plan.weights),
            "classes": mapping.lines,
            "dropped": mapping.dropped,
            "checkpoint_mpp": mpp,
        }
    patch = model.backbone.patch_size if model is not None else patch_of(settings)
    data = train_data(settings, choice, plan.fold, patch=patch, train_config=record)
    if model is None:
        model = new_model(
            settings,
            n_types=len(choice.classes),
            input_size=data.input_size,
            weights=plan.weights,
            hf_cache=plan.hf_cache,
        )
    record["input_size"] = data.input_size
    if not plan.resume and ctx.is_main:
        run.write_config(record)
    trainer = Trainer(
        settings,
        model,
        data,
        run,
        ctx=ctx,
        metrics=ProjectMetrics(choice.class_ids),
        progress=progress if ctx.is_main else None,
    )
    if state is not None:
        trainer.load_state(state)
    result = trainer.fit()
    seconds = time.perf_counter() - start
    extra = {
        "run": str(run.path),
        "status": result.status,
        "epochs": result.epoch,
        "images": result.images,
        "images_per_s": round(result.images / max(result.seconds, 1e-9), 2),
        "best_bpq": result.best_bpq if result.best_epoch is not None else None,
        "best_epoch": result.best_epoch,
        "validation": result.last_validation,
    }
    return ItemOutcome(_fold_name(plan), "done", count=result.step, seconds=seconds, extra=extra)


def _versions() -> dict[str, str]:
    import timm
    import torch

    from histocurate import __version__

    found = {"histocurate": __version__, "torch": torch.__version__, "timm": timm.__version__}
    return {k: str(v) for k, v in found.items()}  # plain strings: weights-only loadable


def run_train(
    config: HistocurateConfig,
    *,
    dataset: str | None = None,
    fold: int | None = None,
    cv: bool = False,
    preset: str | None = None,
    resume: str | None = None,
    run: str | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
) -> TrainRun:
    """Train CellViT on a dataset of the workspace (module docstring)."""
    start = time.perf_counter()
    section = config.train
    ctx = init_distributed(section.device)
    requested = section.setting_overrides()
    base: dict[str, Any] = {
        "device": section.device,
        "weights": section.weights,
        "new_classes": section.new_classes,
    }
    if resume is not None:
        found = resume_run(
            config,
            resume,
            requested=requested,
            preset=preset,
            dataset=dataset,
            fold=fold,
            weights=section.weights,
        )
        weights = found.record.get("weights")
        plans = [
            FoldPlan(
                found.fold,
                found.run.path,
                found.settings.model_dump(mode="json"),
                found.choice,
                **{**base, "weights": Path(weights) if weights else None},
                resume=True,
            )
        ]
        choice = found.choice
    else:
        if dataset is None:
            raise UserInputError("--dataset NAME[@VERSION] is required (or --resume RUN)")
        choice = resolve(config, dataset)
        folds = validation_folds(choice, fold, cv)
        name = preset or section.preset
        if section.weights is not None:  # pretrained weights decide the architecture
            requested = {**requested, "pretrained": True, "arch": {}}
        settings = make_settings(name, **requested).model_dump(mode="json")
        names = [
            run_name(
                choice,
                k,
                name,
                None if run is None else (run if len(folds) == 1 else f"{run}-f{k}"),
            )
            for k in folds
        ]
        names = broadcast_object(ctx, names)
        root = runs_root(config)
        taken = [n for n in names if (root / n).exists()]
        if taken:
            raise UserInputError(
                f"run folder(s) {', '.join(taken)} exist in {root}: choose another --run-name, "
                "or --resume it"
            )
        plans = [
            FoldPlan(k, root / n, settings, choice, **base)
            for k, n in zip(folds, names, strict=True)
        ]
    work = ItemWork(partial(train_fold, progress=progress), _fold_name, "train")
    outcomes = run_items(work, plans, mapper=mapper)
    result = TrainRun(
        outcomes=outcomes, dataset=choice.spec, runs=[p.run_dir for p in plans], is_main=ctx.is_main
    )
    result.seconds = time.perf_counter() - start
    return result
