"""Data-parallel training: the process group (torchrun), and the batches each rank takes.

Under ``torchrun --nproc-per-node N`` every process reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; `init_distributed` joins the group (NCCL on GPUs, gloo on the CPU) and
gives each rank its device. Without torchrun it is a group of one and nothing is joined.

`StepBatches` is the batch sampler: every epoch all ranks compute the same weighted draw
(`DistributedWeightedSampler.epoch_indices`, seeded by the run seed and the epoch), and
optimiser step ``s`` consumes positions ``s*G .. (s+1)*G - 1`` of it (G the global batch).
Those G positions are dealt to ``world_size x accumulation`` slots (slot ``a*W + r`` is
micro-step ``a`` of rank ``r``; slot ``j`` takes positions ``j, j + W*A, ...``), so one
process accumulating A micro-batches sees exactly the batches that A ranks would: the
same global batch gives the same step. Its state is (epoch, step): a resume continues
with the very next step.

>>> b = StepBatches(np.ones(8), batch_size=4, micro_batch=2, seed=0)
>>> [len(m) for m in b], b.steps_per_epoch, b.accumulation
([2, 2, 2, 2], 2, 2)
>>> a = [p for _, p, _ in b.micro_batches(0, 0)[0]]
>>> r0 = StepBatches(np.ones(8), batch_size=4, micro_batch=2, seed=0, rank=0, world_size=2)
>>> a == [p for _, p, _ in r0.micro_batches(0, 0)[0]] == [0, 2]
True
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from histocurate.cellvit.sampling import DistributedWeightedSampler
from histocurate.torchutil import resolve_device

CPU = torch.device("cpu")
Draw = tuple[int, int, int]  # (epoch, position in the epoch's draw, dataset index)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = CPU
    backend: str | None = None  # None: no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 without it)."""
    env = os.environ
    return (int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init_distributed(device: str = "auto", *, timeout_minutes: float = 60.0) -> DistContext:
    """Join torchrun's process group when there is one; the device of this rank."""
    rank, world, local = torchrun_world()
    resolved = resolve_device(device)
    if world <= 1:
        return DistContext(device=resolved)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local)
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=(resolved if resolved.type == "cuda" else None),
        )
    return DistContext(rank, world, local, resolved, backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (when this process joined one)."""
    if ctx.backend is not None and dist.is_initialized():
        with suppress(Exception):
            dist.destroy_process_group()


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the ranks (itself without a group)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class StepBatches(Sampler[list[Draw]]):
    """This rank's micro-batches, step after step (module docstring); each micro-batch is a
    list of (epoch, position, dataset index), so that a loader worker can seed a tile's
    augmentation by its place in the draw whoever draws it."""

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        *,
        batch_size: int,
        micro_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        per_rank, rest = divmod(batch_size, world_size)
        if rest or per_rank % micro_batch:
            raise ValueError(
                f"batch {batch_size} does not split into {world_size} ranks x micro-batches "
                f"of {micro_batch}"
            )
        n = len(weights)
        self.batch_size, self.micro_batch = batch_size, micro_batch
        self.rank, self.world_size = rank, world_size
        self.accumulation = per_rank // micro_batch
        self.steps_per_epoch = max(1, n // batch_size)
        self.seed = seed
        self._draw = DistributedWeightedSampler(
            weights, num_samples=self.steps_per_epoch * batch_size, seed=seed
        )
        self.epoch, self.step = 0, 0

    def set_position(self, epoch: int, step: int = 0) -> None:
        """Iterate epoch ``epoch`` from its step ``step``."""
        if not 0 <= step <= self.steps_per_epoch:
            raise ValueError(f"step {step} outside 0..{self.steps_per_epoch}")
        self.epoch, self.step = epoch, step

    def _of_step(self, drawn: list[int], epoch: int, step: int) -> list[list[Draw]]:
        slots = self.world_size * self.accumulation
        base = step * self.batch_size
        out = []
        for a in range(self.accumulation):
            slot = a * self.world_size + self.rank
            positions = range(base + slot, base + self.batch_size, slots)
            out.append([(epoch, p, int(drawn[p])) for p in positions])
        return out

    def micro_batches(self, epoch: int, step: int) -> list[list[Draw]]:
        """The ``accumulation`` micro-batches of this rank at ``step`` of ``epoch``."""
        return self._of_step(self._draw.epoch_indices(epoch).tolist(), epoch, step)

    def __iter__(self) -> Iterator[list[Draw]]:
        drawn = self._draw.epoch_indices(self.epoch).tolist()
        for step in range(self.step, self.steps_per_epoch):
            yield from self._of_step(drawn, self.epoch, step)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.step) * self.accumulation

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def check_state(self, state: dict[str, int]) -> None:
        """Refuse the state of another draw (seed, batch or dataset size changed)."""
        for key in ("seed", "batch_size", "steps_per_epoch"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state of another run: {key} {state[key]} vs {getattr(self, key)}"
                )
