"""One optimiser step of CellViT: the model's wrappers, the optimiser, schedule and scaler.

`Stepper.backward(group)` runs this rank's micro-batches of one step: forward under
autocast (bf16 where the GPU has it, fp16 with a `GradScaler`, none in fp32), the losses in
fp32, backward scaled by 1/accumulation, DDP's gradient all-reduce only after the last
micro-batch (``no_sync`` before). `apply` moves the weights.

The DDP (and torch.compile) wrappers are rebuilt when the trainable set changes (the
encoder frozen for the first epochs, then not): DDP registers the parameters that need
gradients when it is built.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from histocurate.cellvit.distributed import DistContext
from histocurate.cellvit.guards import OutOfMemoryAdvice, fitting_micro_batch, free_memory
from histocurate.cellvit.guards import oom_message as _oom_message
from histocurate.cellvit.loader import Batch
from histocurate.cellvit.losses import CellViTLoss, LossWeights
from histocurate.cellvit.model import CellViT, parameter_groups, set_encoder_trainable
from histocurate.cellvit.presets import TrainSettings
from histocurate.seeding import int_seed
from histocurate.torchutil import autocast, needs_grad_scaler

TERMS: tuple[str, ...] = tuple(LossWeights.__dataclass_fields__)


def build_optimizer(settings: TrainSettings, model: CellViT) -> torch.optim.Optimizer:
    """Adam or AdamW over every parameter (frozen ones too: unfreezing needs no new one)."""
    groups = parameter_groups(model, lr=settings.lr, weight_decay=settings.weight_decay)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[settings.optimizer]
    return kind(groups, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)


class Stepper:
    """Model, optimiser, schedule and loss scaler of a run (module docstring)."""

    def __init__(self, settings: TrainSettings, model: CellViT, ctx: DistContext) -> None:
        self.s, self.ctx, self.device = settings, ctx, ctx.device
        self.channels_last = settings.channels_last
        self.net = model.to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(settings, self.net)
        self.scheduler = (
            None
            if settings.lr_decay is None
            else torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=settings.lr_decay)
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=needs_grad_scaler(self.device, settings.precision)
        )
        self.loss_fn = CellViTLoss(
            weights=settings.loss.weights(),
            label_sets=settings.label_sets,
            msge_swapped_axes=settings.msge_swapped_axes,
        )
        self.frozen: bool | None = None
        self._buffers: dict[str, torch.Tensor] = {}
        self.module: Any = self.net
        self.ddp: DistributedDataParallel | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_epoch(self, epoch: int) -> None:
        """Freeze the encoder for the settings' first epochs; rewrap when that changes."""
        frozen = epoch < self.s.freeze_encoder_epochs
        if frozen == self.frozen:
            return
        set_encoder_trainable(self.net, not frozen)
        self.frozen = frozen
        self.ddp = None
        module: Any = self.net
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = module = DistributedDataParallel(self.net, device_ids=ids)
        self.module = torch.compile(module) if self.s.compile else module

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def _forward_backward(self, batch: Batch, scale: float, module: Any) -> torch.Tensor:
        batch = batch.to(self.device)
        x = self.net.normalise(batch.images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.s.precision):
            out = module(x)
        result = self.loss_fn(out, **batch.targets)
        self.scaler.scale(result.total * scale).backward()
        return torch.stack([result.total.detach(), *(result.terms[t] for t in TERMS)]) * scale

    def backward(self, group: list[Batch], *, step: int) -> torch.Tensor:
        """Gradients of one step; returns (loss, *terms) averaged over the micro-batches.

        Before each micro-batch torch's generator is seeded by (seed, step, slot), the slot
        of `StepBatches` (micro-step a of rank r is slot a * world + r): dropout and
        drop-path draw the same masks for the same tiles on one process or on several."""
        totals = torch.zeros(len(TERMS) + 1, device=self.device)
        for a, batch in enumerate(group):
            slot = a * self.ctx.world_size + self.ctx.rank
            torch.manual_seed(int_seed(self.s.seed, "step", step, slot))
            last = a == len(group) - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not last else nullcontext()
            with sync:
                totals += self._forward_backward(batch, 1.0 / len(group), self.module)
        return totals

    def apply(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def discard(self) -> None:
        """Drop this step's gradients (the weights do not move)."""
        self.optimizer.zero_grad(set_to_none=True)

    def keep_buffers(self) -> None:
        """Remember the BatchNorm statistics (a forward updates them: a NaN one spoils them)."""
        self._buffers = {k: v.detach().clone() for k, v in self.net.named_buffers()}

    def restore_buffers(self) -> None:
        """The BatchNorm statistics of the last `keep_buffers`."""
        with torch.no_grad():
            for name, value in self.net.named_buffers():
                value.copy_(self._buffers[name])

    def out_of_memory(self, batch: Batch, *, micro: int, step: int) -> OutOfMemoryAdvice:
        """After an out-of-memory error: the advice, with the largest micro-batch that runs
        (tried on this process's model alone, halving from ``micro``)."""
        self.discard()
        free_memory()

        def trial(size: int) -> None:
            part = Batch(
                batch.images[:size],
                {k: v[:size] for k, v in batch.targets.items()},
                batch.tile_ids[:size],
                batch.positions[:size],
            )
            try:
                self._forward_backward(part, 1.0, self.net)
            finally:
                self.discard()

        fits = fitting_micro_batch(trial, len(batch.tile_ids))
        message = _oom_message(
            device=self.device,
            micro=micro,
            fits=fits,
            global_batch=self.s.batch_size,
            tile=int(batch.images.shape[-1]),
            precision=self.s.precision,
            step=step,
        )
        return OutOfMemoryAdvice(message, fits=fits)
