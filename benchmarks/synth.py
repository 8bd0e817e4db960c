"""Benchmark of the synthetic cohort generator, and a check that rare types are learnable.

    python benchmarks/synth.py                 # default cohort: 2 slides x 8 indications, 4096 px
    python benchmarks/synth.py --large         # 10 slides of 20k x 20k px
    python benchmarks/synth.py --features      # logistic regression on simple tile features
    python benchmarks/synth.py --big-slide     # write_benchmark_slide 100k x 80k px

Prints a table of measured numbers: seconds per slide and per megapixel, nuclei per
second (wall and CPU time of this process), and for --features the balanced accuracy of
"tile contains at least one <rare type>" in slide-grouped cross-validation (issue 3's
criterion: >= 0.7 for at least 5 of the 7 rare types).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histocurate.labels import RARE_LABELS
from histocurate.synth import generate_cohort, truth_in_tiles

INDICATIONS = ["LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"]


def time_cohort(out: Path, *, slides: int, size: int, indications: list[str], workers: int) -> list:
    wall, cpu = time.perf_counter(), time.process_time()
    records = generate_cohort(
        out, indications=indications, slides_per_indication=slides, width_px=size,
        height_px=size, seed=0, force=True, workers=workers,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(records)
    mpx = n * size * size / 1e6
    nuclei = sum(r.n_nuclei for r in records)
    print(f"{'slides':<26}{n:>12}")
    print(f"{'size (px)':<26}{size:>12}")
    print(f"{'workers':<26}{workers:>12}")
    print(f"{'wall seconds':<26}{wall:>12.1f}")
    print(f"{'wall s / slide':<26}{wall / n:>12.2f}")
    print(f"{'wall s / megapixel':<26}{wall / mpx:>12.4f}")
    print(f"{'nuclei':<26}{nuclei:>12}")
    print(f"{'nuclei / wall s':<26}{nuclei / wall:>12.0f}")
    if workers == 1:
        print(f"{'CPU s / slide (this proc)':<26}{cpu / n:>12.2f}")
    return records


def tile_grid(records: list, tile: int = 448) -> pd.DataFrame:
    rows = []
    for r in records:
        for y in range(0, r.height - tile + 1, tile):
            for x in range(0, r.width - tile + 1, tile):
                rows.append({"tile_id": f"{r.slide_id}_x{x}_y{y}", "slide_id": r.slide_id,
                             "cohort": r.cohort, "path": str(r.path), "x": x, "y": y,
                             "size_level0": tile, "tile_px": tile})  # fmt: skip
    return pd.DataFrame(rows)


def tile_features(rgb: np.ndarray) -> np.ndarray | None:
    """Simple colour / texture / nuclear-density features; None for a tile mostly glass."""
    from scipy import ndimage
    from skimage.color import rgb2hed

    small = rgb[::2, ::2].astype(np.float32)
    white = (small.min(axis=2) > 215).mean()
    if white > 0.5:
        return None
    hed = rgb2hed(small / 255.0)
    h, e, d = hed[..., 0], hed[..., 1], hed[..., 2]
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    red = ((r - g) > 110) & ((r - b) > 70)
    feats = [white, red.mean(), (r - g).mean(), (r - b).mean()]
    for ch in (h, e, d):
        feats += [ch.mean(), ch.std(), *np.percentile(ch, [10, 50, 90, 99])]
    dark = h > np.percentile(h, 50) + 0.02
    labels, n = ndimage.label(dark)
    areas = np.bincount(labels.ravel())[1:] if n else np.zeros(0)
    very = h > 0.16
    vlab, vn = ndimage.label(very)
    vareas = np.bincount(vlab.ravel())[1:] if vn else np.zeros(0)
    feats += [n, (areas < 15).sum(), ((areas >= 15) & (areas < 60)).sum(), (areas >= 60).sum(),
              areas.mean() if n else 0, vn, (vareas >= 8).sum(), (vareas >= 30).sum()]  # fmt: skip
    gy, gx = np.gradient(small.mean(axis=2))
    feats += [np.hypot(gx, gy).mean(), np.hypot(gx, gy).std()]
    return np.asarray(feats, np.float64)


def feature_check(records: list) -> pd.DataFrame:
    import openslide
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from data_schema import TRUTH
    from histocurate.io import read_table

    tiles = tile_grid(records)
    feats, keep = [], []
    for path, group in tiles.groupby("path", sort=False):
        slide = openslide.OpenSlide(path)
        for i, t in group.iterrows():
            rgb = np.asarray(slide.read_region((t.x, t.y), 0, (t.size_level0,) * 2))[..., :3]
            f = tile_features(rgb)
            if f is not None:
                feats.append(f)
                keep.append(i)
    tiles = tiles.loc[keep].reset_index(drop=True)
    x = np.vstack(feats)
    truth = read_table(Path(records[0].truth_path).parent, TRUTH)
    inside = truth_in_tiles(truth, tiles)
    rows = []
    for label in RARE_LABELS:
        hit = set(inside.loc[inside["label"] == label, "tile_id"])
        y = tiles["tile_id"].isin(hit).to_numpy()
        if y.all() or not y.any():
            rows.append({"type": label, "positive tiles": int(y.sum()), "balanced acc": np.nan})
            continue
        model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5)
        )
        folds = GroupKFold(n_splits=min(5, tiles["slide_id"].nunique()))
        pred = cross_val_predict(model, x, y, groups=tiles["slide_id"], cv=folds)
        rows.append({"type": label, "positive tiles": int(y.sum()), "tiles": len(y),
                     "balanced acc": balanced_accuracy_score(y, pred)})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="10 slides of 20k x 20k px")
    parser.add_argument("--features", action="store_true", help="rare-type learnability check")
    parser.add_argument("--big-slide", action="store_true", help="write a 100k x 80k slide")
    parser.add_argument("--slides", type=int, default=None, help="slides per indication")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temp)")
    args = parser.parse_args()
    args.slides_given = args.slides is not None
    args.slides = args.slides or 2
    out = args.out or Path(tempfile.mkdtemp(prefix="histocurate-synth-bench-"))
    if args.big_slide:
        from histocurate.synth import write_benchmark_slide

        wall, cpu = time.perf_counter(), time.process_time()
        path = write_benchmark_slide(out / "big.tiff", width_px=100_000, height_px=80_000, seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{'benchmark slide':<26}{'100000 x 80000':>16}")
        print(f"{'wall seconds':<26}{wall:>16.1f}")
        print(f"{'CPU seconds':<26}{cpu:>16.1f}")
        print(f"{'file MB':<26}{path.stat().st_size / 1e6:>16.0f}")
        return
    if args.large:
        records = time_cohort(out, slides=args.slides if args.slides_given else 5, size=20_000,
                              indications=["LUAD", "COAD"],
                              workers=args.workers)  # fmt: skip
    else:
        records = time_cohort(out, slides=args.slides, size=4096, indications=INDICATIONS,
                              workers=args.workers)  # fmt: skip
    if args.features:
        table = feature_check(records)
        print()
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        ok = int((table["balanced acc"] >= 0.7).sum())
        print(f"\nrare types with balanced accuracy >= 0.7: {ok} of {len(table)}")


if __name__ == "__main__":
    main()
