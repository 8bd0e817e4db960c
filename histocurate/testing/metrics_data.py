"""Synthetic truth / prediction tables for tests and benchmarks (not a cohort simulator).

Nuclei are non-overlapping discs (polygons) with random types; a prediction is the truth
shifted, resized, with nuclei missed, added and mislabelled at given rates, so that the
code paths (pairs, FP, FN, multi-label truth) are all exercised and better predictions
score better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from histocurate.labels import LABELS


def _discs(rng: np.random.Generator, n: int, size: int, r_min: float, r_max: float) -> np.ndarray:
    """Up to ``n`` non-overlapping discs ``(x, y, r)`` inside a ``size`` tile (rejection)."""
    out = np.zeros((0, 3))
    for _ in range(30):
        if len(out) >= n:
            break
        k = 2 * (n - len(out))
        r = rng.uniform(r_min, r_max, k)
        xy = rng.uniform(r[:, None], size - r[:, None], (k, 2))
        for (x, y), rr in zip(xy, r, strict=True):
            if len(out) >= n:
                break
            d2 = (out[:, 0] - x) ** 2 + (out[:, 1] - y) ** 2
            if np.all(d2 > (out[:, 2] + rr + 1) ** 2):
                out = np.vstack([out, [x, y, rr]])
    return out


def _disc_wkb(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    return shapely.to_wkb(shapely.buffer(shapely.points(x, y), r, quad_segs=6))


def synthetic_truth(
    *,
    n_tiles: int = 10,
    nuclei_per_tile: int = 130,
    tile_size: int = 448,
    ambiguous_rate: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """A truth table like consensus.parquet: tile_id, x, y, label, labels, polygon, r."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(LABELS)) * 0.7)
    frames = []
    for t in range(n_tiles):
        d = _discs(rng, nuclei_per_tile, tile_size, 4.0, 8.0)
        label = rng.choice(np.array(LABELS, dtype=object), size=len(d), p=probs)
        other = rng.choice(np.array(LABELS, dtype=object), size=len(d))
        ambiguous = (rng.random(len(d)) < ambiguous_rate) & (other != label)
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": f"tile_{t:04d}",
                    "x": d[:, 0],
                    "y": d[:, 1],
                    "r": d[:, 2],
                    "label": [None if m else a for a, m in zip(label, ambiguous, strict=True)],
                    "labels": [
                        sorted({a, b}) if m else [a]
                        for a, b, m in zip(label, other, ambiguous, strict=True)
                    ],
                    "polygon": _disc_wkb(d[:, 0], d[:, 1], d[:, 2]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def synthetic_prediction(
    truth: pd.DataFrame,
    *,
    tile_size: int = 448,
    miss_rate: float = 0.1,
    extra_rate: float = 0.1,
    confusion: float = 0.2,
    jitter: float = 1.0,
    seed: int = 1,
) -> pd.DataFrame:
    """A prediction of ``truth``: jittered, resized discs, some missed, added, mislabelled."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    keep = rng.random(n) >= miss_rate
    t = truth[keep]
    k = len(t)
    x = t["x"].to_numpy() + rng.normal(0, jitter, k)
    y = t["y"].to_numpy() + rng.normal(0, jitter, k)
    r = t["r"].to_numpy() * rng.uniform(0.85, 1.15, k)
    first = [s[0] for s in t["labels"]]
    wrong = rng.random(k) < confusion
    random_label = rng.choice(np.array(LABELS, dtype=object), size=k)
    label = np.where(wrong, random_label, np.array(first, dtype=object))
    pred = pd.DataFrame({"tile_id": t["tile_id"].to_numpy(), "x": x, "y": y, "label": label})
    pred["polygon"] = _disc_wkb(x, y, r)
    n_extra = int(extra_rate * n)
    tiles = truth["tile_id"].unique()
    ex = pd.DataFrame(
        {
            "tile_id": rng.choice(tiles, n_extra),
            "x": rng.uniform(5, tile_size - 5, n_extra),
            "y": rng.uniform(5, tile_size - 5, n_extra),
            "label": rng.choice(np.array(LABELS, dtype=object), n_extra),
        }
    )
    ex["polygon"] = _disc_wkb(ex["x"].to_numpy(), ex["y"].to_numpy(), rng.uniform(3, 5, n_extra))
    return pd.concat([pred, ex], ignore_index=True)
