"""Synthetic truth / prediction tables for tests and benchmarks (not a cohort simulator).

Nuclei are non-overlapping discs (polygons) with random types; a prediction is the truth
shifted, resized, with nuclei missed, added and mislabelled at given rates, so that its
expected scores are known roughly and the code paths (pairs, FP, FN, multi-label truth)
are all exercised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from histocurate.labels import LABELS


def _discs(rng: np.random.Generator, n: int, size: int, r_min: float, r_max: float) -> np.ndarray:
    """Up to ``n`` non-overlapping discs ``(x, y, r)`` inside a ``size`` tile (rejection)."""
    out: list[tuple[float, float, float]] = []
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        r = rng.uniform(r_min, r_max)
        x, y = rng.uniform(r, size - r, 2)
        if all((x - a) ** 2 + (y - b) ** 2 > (r + c + 1) ** 2 for a, b, c in out):
            out.append((x, y, r))
    return np.array(out, dtype=np.float64).reshape(-1, 3)


def synthetic_tables(
    *,
    n_tiles: int = 10,
    nuclei_per_tile: int = 130,
    tile_size: int = 448,
    seed: int = 0,
    miss_rate: float = 0.1,
    extra_rate: float = 0.1,
    confusion: float = 0.2,
    ambiguous_rate: float = 0.05,
    jitter: float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A truth table (with ``labels`` sets for ambiguous nuclei) and a prediction table."""
    rng = np.random.default_rng(seed)
    truth_rows, pred_rows = [], []
    probs = rng.dirichlet(np.ones(len(LABELS)) * 0.7)
    for t in range(n_tiles):
        tile = f"tile_{t:04d}"
        discs = _discs(rng, nuclei_per_tile, tile_size, 4.0, 8.0)
        for x, y, r in discs:
            label = str(rng.choice(LABELS, p=probs))
            labels = [label]
            if rng.random() < ambiguous_rate:
                other = str(rng.choice(LABELS))
                labels = sorted({label, other})
            truth_rows.append({
                "tile_id": tile, "x": x, "y": y,
                "label": label if len(labels) == 1 else None, "labels": labels,
                "polygon": shapely.to_wkb(shapely.Point(x, y).buffer(r, quad_segs=6)),
            })  # fmt: skip
            if rng.random() < miss_rate:
                continue
            px, py = x + rng.normal(0, jitter), y + rng.normal(0, jitter)
            pr = r * rng.uniform(0.85, 1.15)
            plabel = label if rng.random() > confusion else str(rng.choice(LABELS))
            pred_rows.append({
                "tile_id": tile, "x": px, "y": py, "label": plabel,
                "polygon": shapely.to_wkb(shapely.Point(px, py).buffer(pr, quad_segs=6)),
            })  # fmt: skip
        for x, y, r in _discs(rng, int(extra_rate * len(discs)), tile_size, 3.0, 6.0):
            pred_rows.append({
                "tile_id": tile, "x": x, "y": y, "label": str(rng.choice(LABELS)),
                "polygon": shapely.to_wkb(shapely.Point(x, y).buffer(r, quad_segs=6)),
            })  # fmt: skip
    return pd.DataFrame(truth_rows), pd.DataFrame(pred_rows)
