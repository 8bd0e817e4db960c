"""CellViT's oversampling (gamma = 0.85) from the dataset's own counts, and a weighted
sampler that several DDP ranks share.

Cell weights (CellViT): N_c = images holding at least one nucleus of class c, K = sum N_c,
w_c = K / (gamma N_c + (1 - gamma) K); an image's weight is
(1 - gamma) max_c p_c + gamma sum_c p_c w_c with p_c = 1 if the image holds class c;
images without nuclei get the smallest non-zero weight. The optional group factor (the
indication here, CellViT's tissue) is w_g = K_g / (gamma N_g + (1 - gamma) K_g) with N_g the
images of group g; CellViT's ``cell+tissue`` combines w / max(w) + w_g / max(w_g).

>>> sample_weights(np.array([[1, 0], [0, 3], [2, 2]])).round(4).tolist()
[1.6283, 1.6283, 3.1065]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


def sample_weights(class_counts: np.ndarray, gamma: float = 0.85) -> np.ndarray:
    """Per-image weights (float64, (n_images,)) from nuclei counts (n_images, n_classes)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"class_counts must be (n_images, n_classes), got shape {counts.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("class_counts must be finite and non-negative")
    present = np.clip(counts, 0, 1)
    n_c = present.sum(axis=0)
    k = n_c.sum()
    if k == 0:
        return np.ones(len(counts))
    w_c = k / (gamma * n_c + (1.0 - gamma) * k)
    weights = (1.0 - gamma) * present.max(axis=1) + gamma * (present * w_c).sum(axis=1)
    positive = weights[weights > 0]
    weights[weights == 0] = positive.min()
    return weights


def group_weights(groups: Sequence[Any], gamma: float = 0.85) -> np.ndarray:
    """CellViT's tissue weights with any per-image group label (here the indication).

    >>> group_weights(["LUAD", "LUAD", "LUAD", "BRCA"]).round(4).tolist()
    [1.2698, 1.2698, 1.2698, 2.7586]
    """
    labels = list(groups)
    names, index = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    n_g = np.bincount(index, minlength=len(names)).astype(np.float64)
    k = n_g.sum()
    w_g = k / (gamma * n_g + (1.0 - gamma) * k)
    return np.asarray(w_g[index], dtype=np.float64)


def combined_weights(cell: np.ndarray, group: np.ndarray) -> np.ndarray:
    """CellViT's ``cell+tissue``: each factor scaled to a maximum of 1, then added."""
    cell, group = np.asarray(cell, np.float64), np.asarray(group, np.float64)
    if cell.shape != group.shape:
        raise ValueError(f"{cell.shape} cell weights vs {group.shape} group weights")
    return cell / cell.max() + group / group.max()


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement, shared by ``world_size`` ranks.

    Every epoch all ranks draw the same ``num_samples`` indices (a generator seeded by
    ``seed`` and the epoch) and rank r takes positions r, r + world_size, ...: together
    they consume one weighted sample, as one process would. ``state_dict`` records the
    epoch and how many indices this rank has handed out, so a resumed run continues with
    the very next index (a loader prefetches: pass the number it actually trained on).
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        *,
        num_samples: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1 or len(w) == 0 or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be a non-empty 1-D array of non-negative values")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.weights = w
        self.total = int(num_samples if num_samples is not None else len(w))
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.per_rank = math.ceil(self.total / world_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call before each epoch, as DDP's)."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def epoch_indices(self, epoch: int | None = None) -> torch.Tensor:
        """The whole draw of an epoch (all ranks), padded to a multiple of ``world_size``."""
        gen = torch.Generator().manual_seed(
            self.seed * 100_003 + (self.epoch if epoch is None else epoch)
        )
        drawn = torch.multinomial(self.weights, self.total, replacement=True, generator=gen)
        pad = self.per_rank * self.world_size - self.total
        return torch.cat([drawn, drawn[:pad]]) if pad else drawn

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_indices()[self.rank :: self.world_size].tolist()
        while self.start < len(mine):
            index = mine[self.start]
            self.start += 1
            yield int(index)
        self.start = 0

    def __len__(self) -> int:
        return self.per_rank - self.start

    def state_dict(self, *, consumed: int | None = None) -> dict[str, int]:
        """Where this rank stands; ``consumed``: the indices the loop really used this epoch."""
        done = self.start if consumed is None else consumed
        return {"epoch": self.epoch, "start": done, "seed": self.seed,
                "world_size": self.world_size, "total": self.total}  # fmt: skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "world_size", "total"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state of another run: {key} {state[key]} vs {getattr(self, key)}"
                )
        self.epoch, self.start = int(state["epoch"]), int(state["start"])
