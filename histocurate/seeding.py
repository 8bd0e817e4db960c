"""The one seeding helper: seeds that depend on what is drawn, not on processing order.

Every random choice (a slide's K-means, a tile's annotators, a fold assignment, a
training run) gets its own generator from the run seed and the names of what it is about
(a slide id, a tile id, a purpose). The result is then the same whether items run in
order, shuffled, or on other processes.

>>> int(rng_for(0, "slide-1").integers(100)) == int(rng_for(0, "slide-1").integers(100))
True
>>> int_seed(0, "a") != int_seed(0, "b")
True
"""

from __future__ import annotations

import zlib

import numpy as np


def key_entropy(*keys: object) -> list[int]:
    """Stable 32-bit integers for ``keys`` (CRC32 of their text; Python's hash is salted)."""
    return [zlib.crc32(str(k).encode("utf-8")) for k in keys]


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator determined by ``seed`` and ``keys`` only."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key_entropy(*keys)])
    )


def int_seed(seed: int, *keys: object) -> int:
    """A 31-bit integer seed (for scikit-learn / torch) determined by ``seed`` and ``keys``."""
    return int(rng_for(seed, *keys).integers(0, 2**31 - 1))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators (a training run's start)."""
    import random

    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)
