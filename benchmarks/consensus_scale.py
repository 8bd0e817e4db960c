"""Consensus at HistoVAL scale: 530 tiles, 212,992 annotated nuclei from 3 annotators.

Synthetic polygons (no images): each tile holds ~150 true nuclei (ellipses on a jittered
grid, 448 px tiles); each annotator marks ~134 of them per tile with a slightly shifted and
rescaled mask and a label (10% confusion, 5% 'unknown'), plus ~2% spurious clicks. Every
size runs in its own process (so peak memory is that size's alone) on the cores given
(default 2, the target machine) and times `build_consensus` (validation from WKB, matching,
majority + Dawid-Skene labels). Target: full size under 60 s and 4 GiB; time growth from
1/10 to full size close to linear.

    python benchmarks/consensus_scale.py [--fractions 0.1 0.25 0.5 1] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

FULL_TILES = 530
FULL_ANNOTATIONS = 212_992
ANNOTATORS = ("pathologist_a", "pathologist_b", "pathologist_c")
TILE_PX = 448
TRUE_PER_TILE = 150


def make_masks(n_tiles: int, n_annotations: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Annotated masks (WKB polygons) for ``n_tiles`` tiles, ``n_annotations`` rows in all."""
    import numpy as np
    import pandas as pd
    import shapely

    from histocurate.labels import LABELS

    rng = np.random.default_rng(seed)
    per = np.full((n_tiles, len(ANNOTATORS)), n_annotations // (n_tiles * len(ANNOTATORS)))
    rest = n_annotations - per.sum()
    per.flat[rng.choice(per.size, size=rest, replace=False)] += 1
    side = int(np.ceil(np.sqrt(TRUE_PER_TILE)))
    cell = TILE_PX / side
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)[:TRUE_PER_TILE] * cell + cell / 2
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    tiles, annots, cx, cy, rx, ry, rot, labels = [], [], [], [], [], [], [], []
    for t in range(n_tiles):
        centre = grid + rng.uniform(-cell / 5, cell / 5, grid.shape)
        radius = rng.uniform(5, 10, (TRUE_PER_TILE, 2))
        theta = rng.uniform(0, np.pi, TRUE_PER_TILE)
        truth_label = rng.choice(len(LABELS), TRUE_PER_TILE)
        for a in range(len(ANNOTATORS)):
            k = int(per[t, a])
            n_spurious = max(1, k // 50)
            pick = rng.choice(TRUE_PER_TILE, size=k - n_spurious, replace=False)
            c = np.concatenate([centre[pick], rng.uniform(10, TILE_PX - 10, (n_spurious, 2))])
            r = np.concatenate([radius[pick], rng.uniform(5, 10, (n_spurious, 2))])
            c = c + rng.normal(0, 1.0, c.shape)
            r = r * rng.uniform(0.9, 1.1, r.shape)
            lab = np.concatenate([truth_label[pick], rng.choice(len(LABELS), n_spurious)])
            confused = rng.random(k) < 0.10
            lab[confused] = rng.choice(len(LABELS), int(confused.sum()))
            tiles.append(np.full(k, t))
            annots.append(np.full(k, a))
            cx.append(c[:, 0])
            cy.append(c[:, 1])
            rx.append(r[:, 0])
            ry.append(r[:, 1])
            rot.append(np.concatenate([theta[pick], rng.uniform(0, np.pi, n_spurious)]))
            labels.append(np.where(rng.random(k) < 0.05, -1, lab))
    tile, annot = np.concatenate(tiles), np.concatenate(annots)
    x, y = np.concatenate(cx), np.concatenate(cy)
    a_r, b_r, th = np.concatenate(rx), np.concatenate(ry), np.concatenate(rot)
    ex = a_r[:, None] * np.cos(angles)[None, :]
    ey = b_r[:, None] * np.sin(angles)[None, :]
    px = x[:, None] + ex * np.cos(th)[:, None] - ey * np.sin(th)[:, None]
    py = y[:, None] + ex * np.sin(th)[:, None] + ey * np.cos(th)[:, None]
    polys = shapely.polygons(np.stack([px, py], axis=2))
    names = np.array([*LABELS, "unknown"], dtype=object)
    return pd.DataFrame(
        {
            "annotation_id": np.arange(1, tile.size + 1, dtype=np.int64),
            "tile_id": np.char.add("tile-", tile.astype(str)).astype(object),
            "annotator": np.array(ANNOTATORS, dtype=object)[annot],
            "x": x,
            "y": y,
            "label": names[np.concatenate(labels)],
            "polygon": shapely.to_wkb(polys),
        }
    )


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(fraction: float) -> dict[str, float]:
    from histocurate.consensus import build_consensus

    n_tiles = max(1, round(FULL_TILES * fraction))
    n_ann = round(FULL_ANNOTATIONS * n_tiles / FULL_TILES)
    masks = make_masks(n_tiles, n_ann)
    before = _rss_mib()
    start = time.perf_counter()
    result = build_consensus(masks)
    seconds = time.perf_counter() - start
    nuclei = result.nuclei
    return {
        "fraction": fraction,
        "tiles": n_tiles,
        "annotations": len(masks),
        "nuclei": len(nuclei),
        "determined": float(nuclei["label"].notna().mean()),
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": _rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one)))
        return
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.cores)
    rows = []
    for fraction in args.fractions:
        cmd = [sys.executable, __file__, "--one", str(fraction)]
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))[: args.cores]
            cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(
        f"{'fraction':>8} {'tiles':>6} {'annotations':>11} {'nuclei':>8} {'determined':>10} "
        f"{'seconds':>8} {'x time':>7} {'x size':>7} {'peak RSS MiB':>12} {'before MiB':>10}"
    )
    for r in rows:
        grow_t, grow_n = r["seconds"] / base["seconds"], r["annotations"] / base["annotations"]
        print(
            f"{r['fraction']:>8.2f} {r['tiles']:>6d} {r['annotations']:>11,d} {r['nuclei']:>8,d} "
            f"{r['determined']:>10.3f} {r['seconds']:>8.2f} "
            f"{grow_t:>7.2f} {grow_n:>7.2f} "
            f"{r['peak_rss_mib']:>12.0f} {r['rss_before_mib']:>10.0f}"
        )
    print(f"(cores: {args.cores}; target: full size < 60 s and < 4096 MiB peak RSS)")


if __name__ == "__main__":
    main()
