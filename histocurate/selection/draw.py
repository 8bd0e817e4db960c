"""The final draws: uniform from the diversity + rare pool, weighted from the uncertainty pool.

Pools are sorted by tile id before drawing, so the result depends on the pool's content
and the seed only, not on the order slides were processed in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from histocurate.seeding import rng_for


def uniform_draw(pool: pd.DataFrame, n: int, *, seed: int, key: str) -> pd.DataFrame:
    """``n`` rows of ``pool`` at random without replacement (all of them when fewer), with a
    ``draw_weight`` column (1 / pool size)."""
    if n < 0:
        raise ValueError(f"cannot draw {n} tiles")
    pool = pool.sort_values("tile_id", kind="stable").reset_index(drop=True)
    take = min(n, len(pool))
    rows = np.sort(rng_for(seed, "uniform-draw", key).choice(len(pool), take, replace=False))
    out = pool.iloc[rows].copy()
    out["draw_weight"] = 1.0 / len(pool) if len(pool) else np.nan
    return out


def weighted_draw(
    pool: pd.DataFrame, weights: np.ndarray, n: int, *, seed: int, key: str
) -> pd.DataFrame:
    """``n`` rows of ``pool`` without replacement, with probability proportional to
    ``weights`` (aligned with ``pool``'s rows); ``draw_weight`` holds the normalised weight."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != len(pool):
        raise ValueError("one weight per pool row")
    if len(weights) and (
        not np.isfinite(weights).all() or (weights < 0).any() or not weights.any()
    ):
        raise ValueError("weights must be finite, >= 0 and not all 0")
    order = np.argsort(pool["tile_id"].to_numpy(), kind="stable")
    pool, weights = pool.iloc[order].reset_index(drop=True), weights[order]
    if len(pool) == 0:
        return pool.assign(draw_weight=pd.Series(dtype="float64"))
    prob = weights / weights.sum()
    positive = int((prob > 0).sum())
    take = min(n, positive)
    rng = rng_for(seed, "weighted-draw", key)
    rows = np.sort(rng.choice(len(pool), take, replace=False, p=prob))
    out = pool.iloc[rows].copy()
    out["draw_weight"] = prob[rows]
    return out
