"""Why a training run stops early, said so that the user can act: NaN loss, out of memory.

Both are `UserInputError`s (the CLI prints the message and exits 2); a run stopped by
one has written nothing over its ``last.pt`` / ``best.pt``.

>>> is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
True
>>> is_out_of_memory(RuntimeError("shape mismatch"))
False
>>> fitting_micro_batch(lambda b: _needs(b, 3), 16)
2
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

import torch

from histocurate.errors import UserInputError


class TrainingStopped(UserInputError):
    """A run that stopped on purpose before its end (the message says why and what to do)."""


class NaNLossError(TrainingStopped):
    """The loss was not finite: the step, the batch's tiles and what was saved are named."""

    def __init__(self, message: str, *, step: int, epoch: int, tiles: Sequence[str]) -> None:
        super().__init__(message)
        self.step, self.epoch, self.tiles = step, epoch, list(tiles)


class OutOfMemoryAdvice(TrainingStopped):
    """The device ran out of memory; ``fits`` is the largest micro-batch that ran (or None)."""

    def __init__(self, message: str, *, fits: int | None) -> None:
        super().__init__(message)
        self.fits = fits


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU (or CPU allocator) out-of-memory error."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fitting_micro_batch(try_batch: Callable[[int], None], start: int) -> int | None:
    """The largest micro-batch below ``start`` (halving) for which ``try_batch`` runs
    without running out of memory; None when not even 1 does."""
    size = start // 2
    while size >= 1:
        try:
            try_batch(size)
            return size
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_memory()
        size //= 2
    return None


def oom_message(
    *,
    device: torch.device,
    micro: int,
    fits: int | None,
    global_batch: int,
    tile: int,
    precision: str,
    step: int,
) -> str:
    """What to tell the user after an out-of-memory error."""
    head = (
        f"out of {device.type.upper()} memory at step {step} with micro-batches of {micro} "
        f"tiles of {tile} px ({precision})"
    )
    if fits is None:
        return (
            f"{head}; not even 1 tile fits: use --precision bf16 (or fp16), a smaller encoder, "
            "or a device with more memory"
        )
    return (
        f"{head}; a micro-batch of {fits} fits: rerun with --micro-batch {fits} (gradient "
        f"accumulation keeps the global batch of {global_batch}), or --batch-size {fits} per "
        "process for a smaller global batch"
    )


def _needs(size: int, limit: int) -> None:
    """Doctest helper: a step that runs out of memory above ``limit`` tiles."""
    if size >= limit:
        raise torch.OutOfMemoryError(f"would need {size} tiles")
