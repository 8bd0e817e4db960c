"""The training loop: `Trainer(settings, model, data, run, ctx=...).fit()`.

Per optimiser step, each rank takes its micro-batches of the step from `StepBatches` and
`Stepper` computes the gradients (AMP, accumulation, DDP). Dropout and drop-path draw from
a generator reseeded per (seed, step, slot), so a run is deterministic and a resume from
any saved step continues exactly. The step's loss terms are summed over the ranks (one small
all-reduce that also carries the time-budget flag); a loss that is not finite stops the
run before the optimiser moves (`nan.pt` written, the step and the batch's tiles named);
out of memory stops it too, with the micro-batch that fits. After each epoch: the learning
rate schedule, the validation when due (``best.pt`` by bPQ), ``last.pt``,
``metrics.parquet`` and ``curves.png`` (rank 0 writes). A time budget (``max_minutes``)
stops at a step boundary, validates and saves: the run can be resumed from there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from histocurate.cellvit.augment import AugmentConfig
from histocurate.cellvit.distributed import (
    DistContext,
    StepBatches,
    all_reduce_sum,
    barrier,
    gather_objects,
)
from histocurate.cellvit.guards import NaNLossError, is_out_of_memory
from histocurate.cellvit.loader import Batch, ClassMap, TrainTiles, collate
from histocurate.cellvit.model import CellViT
from histocurate.cellvit.presets import TrainSettings
from histocurate.cellvit.rundir import BEST, LAST, NAN, CheckpointMeta, MetricsLog, RunDir
from histocurate.cellvit.rundir import plot_curves as _plot
from histocurate.cellvit.stepper import TERMS, Stepper
from histocurate.cellvit.validate import ValidationMetrics, validate

PLOT_EVERY_S = 60.0  # curves.png is redrawn at most this often (and at the end)


@dataclass
class TrainData:
    """What the loop trains on: base datasets, sample weights, class map and metadata."""

    train: Dataset[dict[str, Any]]
    val: Dataset[dict[str, Any]] | None
    weights: np.ndarray
    classes: ClassMap
    meta: CheckpointMeta
    input_size: int


@dataclass
class FitResult:
    status: str  # "finished" or "time budget"
    epoch: int  # epochs completed
    step: int
    images: int
    seconds: float
    last_validation: dict[str, float] | None
    best_bpq: float
    best_epoch: int | None


class Trainer:
    """One run of the loop (module docstring); `load_state` before `fit` resumes."""

    def __init__(
        self,
        settings: TrainSettings,
        model: CellViT,
        data: TrainData,
        run: RunDir,
        *,
        ctx: DistContext,
        metrics: ValidationMetrics | None = None,
        progress: Any = None,
    ) -> None:
        self.s, self.data, self.run, self.ctx, self.metrics = settings, data, run, ctx, metrics
        self.progress = progress
        self.micro, self.accum = settings.accumulation(ctx.world_size)
        self.sampler = StepBatches(
            data.weights,
            batch_size=settings.batch_size,
            micro_batch=self.micro,
            seed=settings.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        augment = AugmentConfig(tile_size=data.input_size) if settings.augment else None
        tiles = TrainTiles(
            data.train,
            data.classes,
            input_size=data.input_size,
            seed=settings.seed,
            augment=augment,
            label_sets=settings.label_sets,
        )
        self.loader = DataLoader(
            tiles,
            batch_sampler=self.sampler,
            num_workers=settings.workers,
            collate_fn=collate,
            pin_memory=ctx.device.type == "cuda",
        )
        self.stepper = Stepper(settings, model, ctx)
        self.log = MetricsLog(run)
        self.epoch = self.step_in_epoch = self.step = self.images = 0
        self.seconds, self.best_bpq = 0.0, -math.inf
        self.best_epoch: int | None = None
        self.last_validation: dict[str, float] | None = None
        self._plotted = -math.inf

    @property
    def model(self) -> CellViT:
        return self.stepper.net

    def state(self) -> dict[str, Any]:
        """The training state saved beside the weights (``training`` in last.pt)."""
        return {
            **self.stepper.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "images": self.images,
            "seconds": self.seconds,
            "best_bpq": self.best_bpq,
            "best_epoch": self.best_epoch,
            "sampler": {
                **self.sampler.state_dict(),
                "epoch": self.epoch,
                "step": self.step_in_epoch,
            },
            "settings": self.s.model_dump(mode="json"),
            "world_size": self.ctx.world_size,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a saved ``training`` state (the model's weights already loaded)."""
        self.sampler.check_state(state["sampler"])
        self.stepper.load_state_dict(state)
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.step, self.images = int(state["step"]), int(state["images"])
        self.seconds, self.best_bpq = float(state["seconds"]), float(state["best_bpq"])
        self.best_epoch = state.get("best_epoch")
        if self.ctx.is_main:
            self.log.resume(self.step)

    def _save(self, name: str, *, wait: bool = False) -> None:
        if self.ctx.is_main:
            self.run.save(name, self.model, self.data.meta, self.state(), wait=wait)

    def _nan(self, totals: torch.Tensor, group: list[Batch]) -> NaNLossError:
        parts = gather_objects(self.ctx, [b.tile_ids for b in group])
        tiles = [t for part in parts for ids in part for t in ids]
        self.stepper.discard()
        self.stepper.restore_buffers()
        self._save(NAN, wait=True)
        bad = [t for t, v in zip(TERMS, totals[1:].tolist(), strict=True) if not math.isfinite(v)]
        message = (
            f"the loss became {totals[0].item()} at step {self.step + 1} (epoch {self.epoch}; "
            f"terms {', '.join(bad) or 'total'}); the batch's tiles: {', '.join(tiles)}. "
            f"The weights before that step are in {self.run.file(NAN)}; {LAST} and {BEST} are "
            "untouched. Try --precision fp32 or a lower learning rate, and check those tiles"
        )
        return NaNLossError(message, step=self.step + 1, epoch=self.epoch, tiles=tiles)

    def _validate(self) -> None:
        if self.data.val is None or self.metrics is None or not len(self.data.val):  # type: ignore[arg-type]
            return
        scores = validate(
            self.model,
            self.data.val,
            self.metrics,
            self.data.classes,
            ctx=self.ctx,
            precision=self.s.precision,
            batch=self.s.val_batch,
            channels_last=self.stepper.channels_last,
            workers=self.s.workers if self.ctx.device.type == "cuda" else 0,
        )
        self.last_validation = scores
        epoch = self.epoch - (self.step_in_epoch == 0)  # the epoch it follows
        self.log.add(
            "validation",
            epoch=epoch,
            step=self.step,
            images=self.images,
            seconds=self.seconds,
            values=scores,
        )
        bpq = scores.get("bpq", math.nan)
        if math.isfinite(bpq) and bpq > self.best_bpq:
            self.best_bpq, self.best_epoch = bpq, epoch
            self._save(BEST)

    def _checkpoint(self, *, final: bool) -> None:
        self._save(LAST)
        if self.ctx.is_main:
            self.log.flush()
            if final or time.perf_counter() - self._plotted > PLOT_EVERY_S:
                _plot(self.log.frame(), self.run.curves)
                self._plotted = time.perf_counter()
        barrier(self.ctx)

    def _report(self, values: dict[str, float]) -> None:
        self.log.add(
            "train",
            epoch=self.epoch,
            step=self.step,
            images=self.images,
            seconds=self.seconds,
            values=values,
        )
        if self.progress is not None:
            self.progress.advance(1)
            if hasattr(self.progress, "stats"):
                ips = values["images_per_s"]
                self.progress.stats(loss=values["loss"], images_per_s=ips, epoch=self.epoch)

    def _one_step(self, group: list[Batch], late: bool) -> tuple[torch.Tensor, bool]:
        """Gradients of a step, then the all-reduce of its loss terms and the stop flag."""
        self.stepper.keep_buffers()
        try:
            totals = self.stepper.backward(group, step=self.step)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            totals = None  # leave the except block first: its frames hold the memory
        if totals is None:
            raise self.stepper.out_of_memory(group[0], micro=self.micro, step=self.step + 1)
        flags = all_reduce_sum(self.ctx, torch.cat([totals, totals.new_tensor([late])]))
        return flags[:-1] / self.ctx.world_size, bool(flags[-1] > 0)

    def fit(self) -> FitResult:
        """Train to the settings' epochs or the time budget (module docstring)."""
        try:
            return self._fit()
        finally:
            self.run.wait()  # the last checkpoint on disk, whatever stopped the run

    def _fit(self) -> FitResult:
        start, budget = time.perf_counter(), (self.s.max_minutes or math.inf) * 60
        base_seconds, steps = self.seconds, self.sampler.steps_per_epoch
        if self.progress is not None:
            total = (self.s.epochs - self.epoch) * steps - self.step_in_epoch
            self.progress.start(max(total, 0), self.run.name)
        status, validated_at, self._plotted = "finished", -1, time.perf_counter()
        while self.epoch < self.s.epochs and status == "finished":
            self.stepper.set_epoch(self.epoch)
            self.sampler.set_position(self.epoch, self.step_in_epoch)
            group: list[Batch] = []
            tick = time.perf_counter()
            for batch in self.loader:
                group.append(batch)
                if len(group) < self.accum:
                    continue
                totals, stop = self._one_step(group, time.perf_counter() - start > budget)
                if not bool(torch.isfinite(totals).all()):
                    raise self._nan(totals, group)
                self.stepper.apply()
                self.step, self.step_in_epoch = self.step + 1, self.step_in_epoch + 1
                self.images += self.s.batch_size
                now = time.perf_counter()
                self.seconds = base_seconds + now - start
                values = dict(zip(("loss", *TERMS), totals.tolist(), strict=True))
                values["lr"] = self.stepper.lr
                values["images_per_s"] = self.s.batch_size / max(now - tick, 1e-9)
                tick, group = now, []
                self._report(values)
                if stop:
                    status = "time budget"
                    break
            if status == "finished":
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.stepper.end_epoch()
            due = self.epoch % self.s.val_every == 0 or self.epoch == self.s.epochs
            if (due or status != "finished") and validated_at != self.step:
                self._validate()
                validated_at = self.step
            self._checkpoint(final=self.epoch >= self.s.epochs or status != "finished")
        return FitResult(
            status,
            self.epoch,
            self.step,
            self.images,
            self.seconds,
            self.last_validation,
            self.best_bpq,
            self.best_epoch,
        )
