"""Seeds that depend on what is drawn, not on the order things are processed in.

Every random choice of the selection gets its own generator from the run seed and the
names of what it is about (a slide id, an indication, a purpose). A slide's clusters are
then the same whether slides run in order, shuffled, or on other processes.
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
