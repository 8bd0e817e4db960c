"""Consensus against the truth: simulated pathologists on the synthetic cohort.

Truth: nuclei laid out by the synthetic cohort (`histocurate.synth`: layout only, no pixels
rendered), cut into 448 px tiles at 0.25 um/px (`truth_in_tiles`). When that package is not
importable, ellipses on a jittered grid stand in (said in the output).

Annotators: each tile goes to 3 of the 9 simulated pathologists of
`histocurate.demo.profiles` (misses, click jitter, confusions, 'unknown', false clicks),
whose clicks come from `simulate_clicks`. Masks: a *simulated NuClick* (no trained model
here): a click inside a true nucleus gets that nucleus' outline, slightly shifted and
dilated or eroded (mean IoU to truth about 0.8); a click on no nucleus gets a 5 px disc.
The same simulated segmenter re-segments the consensus centroids, as the stage does.

Measured, per label rule (majority, Dawid-Skene): detection F1 of consensus nuclei against
truth (one-to-one, IoU > 0.5), label accuracy on the nuclei with a determined label, the
fraction undetermined, and the fraction of undetermined nuclei whose candidate set holds
the true type; each single pathologist's own masks are shown for comparison.

    python benchmarks/consensus_quality.py [--slides-per-indication 1] [--size 2688]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import shapely
from scipy.optimize import linear_sum_assignment

from histocurate.consensus import build_consensus
from histocurate.consensus.agreement import agreement_report
from histocurate.demo.pathologists import simulate_clicks
from histocurate.demo.profiles import DEFAULT_PROFILES
from histocurate.labels import LABELS

TILE = 448
MPP = 0.25
INDICATIONS = ("LUAD", "COAD", "BRCA", "MESO")


def synthetic_truth(size: int, per_indication: int, seed: int) -> tuple[pd.DataFrame, str]:
    """Truth nuclei per tile (tile_id, x, y, label, polygon WKB in tile pixels)."""
    try:
        from histocurate.synth import truth_in_tiles
        from histocurate.synth.layout import build_slide
        from histocurate.synth.truth import truth_frame
    except ImportError:
        return _ellipse_truth(size, per_indication * len(INDICATIONS), seed), "ellipses"
    truths, tiles = [], []
    n = size // TILE
    for k, indication in enumerate(INDICATIONS * per_indication):
        slide_id = f"{indication}-{k:03d}"
        model = build_slide(
            indication=indication, cohort="bench", width=size, height=size, mpp=MPP, seed=seed + k
        )
        truths.append(truth_frame(slide_id, model.cells))
        for i in range(n):
            for j in range(n):
                tiles.append(
                    dict(tile_id=f"{slide_id}_x{i * TILE}_y{j * TILE}", slide_id=slide_id,
                         x=i * TILE, y=j * TILE, size_level0=TILE, tile_px=TILE)
                )  # fmt: skip
    return truth_in_tiles(pd.concat(truths), pd.DataFrame(tiles)), "histocurate.synth layout"


def _ellipse_truth(size: int, slides: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range((size // TILE) ** 2 * slides):
        for gx in range(10):
            for gy in range(10):
                if rng.random() < 0.5:
                    continue
                cx, cy = (gx + 0.5) * TILE / 10, (gy + 0.5) * TILE / 10
                cx, cy = cx + rng.uniform(-6, 6), cy + rng.uniform(-6, 6)
                poly = shapely.affinity.scale(
                    shapely.Point(cx, cy).buffer(1, 16), *rng.uniform(6, 12, 2)
                )
                label = str(rng.choice(LABELS))
                rows.append(
                    dict(tile_id=f"tile-{t:04d}", x=cx, y=cy, label=label,
                         polygon=shapely.to_wkb(poly))
                )  # fmt: skip
    return pd.DataFrame(rows)


class SimulatedNuClick:
    """Mask of the true nucleus under a click, perturbed like a decent model's output."""

    def __init__(self, truth_polygons: np.ndarray, rng: np.random.Generator) -> None:
        self.polys = truth_polygons
        self.tree = shapely.STRtree(truth_polygons) if len(truth_polygons) else None
        self.rng = rng

    def __call__(self, points: np.ndarray) -> list[shapely.Geometry]:
        out = []
        for x, y in points:
            hit = None
            if self.tree is not None:
                found = self.tree.query(shapely.Point(x, y), predicate="intersects")
                if len(found):
                    hit = self.polys[found[0]]
            if hit is None:
                out.append(shapely.Point(x, y).buffer(5, 8))
                continue
            dx, dy = self.rng.normal(0, 0.7, 2)
            grown = shapely.affinity.translate(hit, dx, dy).buffer(self.rng.normal(0, 0.6), 8)
            out.append(grown if not grown.is_empty else hit)
        return out


def annotate(truth: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict[str, SimulatedNuClick]]:
    """Masks of 3 random pathologists (of 9) per tile, and each tile's simulated NuClick."""
    rng = np.random.default_rng(seed)
    rows, segmenters = [], {}
    for tile_id, part in truth.groupby("tile_id", sort=True):
        polys = shapely.from_wkb(part["polygon"].to_numpy())
        seg = SimulatedNuClick(polys, rng)
        segmenters[str(tile_id)] = seg
        for p in rng.choice(len(DEFAULT_PROFILES), 3, replace=False):
            profile = DEFAULT_PROFILES[p]
            clicks = simulate_clicks(part, profile, mpp=MPP, width=TILE, height=TILE, rng=rng)
            masks = seg(clicks[["x", "y"]].to_numpy())
            rows.append(clicks.assign(tile_id=tile_id, annotator=profile.username, geometry=masks))
    frame = pd.concat(rows, ignore_index=True)
    frame.insert(0, "annotation_id", np.arange(1, len(frame) + 1))
    return frame, segmenters


def match_truth(
    truth: pd.DataFrame, pred: pd.DataFrame, geom_col: str = "geometry"
) -> tuple[int, int, int, list[tuple[int, int]]]:
    """TP, FP, FN and matched (truth row, pred row) pairs, one-to-one with IoU > 0.5."""
    tp = fp = fn = 0
    pairs: list[tuple[int, int]] = []
    pred_by_tile = dict(tuple(pred.groupby("tile_id")))
    for tile_id, t_part in truth.groupby("tile_id"):
        p_part = pred_by_tile.get(tile_id)
        if p_part is None:
            fn += len(t_part)
            continue
        tg = shapely.from_wkb(t_part["polygon"].to_numpy())
        pg = p_part[geom_col].to_numpy()
        left, right = shapely.STRtree(pg).query(tg, predicate="intersects")
        inter = shapely.area(shapely.intersection(tg[left], pg[right]))
        iou = inter / (shapely.area(tg[left]) + shapely.area(pg[right]) - inter)
        ok = iou > 0.5
        cost = np.zeros((len(tg), len(pg)))
        cost[left[ok], right[ok]] = iou[ok]
        rows, cols = linear_sum_assignment(cost, maximize=True)
        good = cost[rows, cols] > 0
        matched = len(rows[good])
        tp += matched
        fp += len(pg) - matched
        fn += len(tg) - matched
        pairs += list(
            zip(t_part.index[rows[good]].tolist(), p_part.index[cols[good]].tolist(), strict=True)
        )
    return tp, fp, fn, pairs


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides-per-indication", type=int, default=1)
    parser.add_argument("--size", type=int, default=2688, help="Slide side, px (0.25 um/px).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    truth, source = synthetic_truth(args.size, args.slides_per_indication, args.seed)
    masks, segmenters = annotate(truth, args.seed)
    result = build_consensus(masks)
    nuclei = result.nuclei
    regrown = []
    for tile_id, part in nuclei.groupby("tile_id"):
        regrown += list(
            zip(part.index, segmenters[str(tile_id)](part[["x", "y"]].to_numpy()), strict=True)
        )
    nuclei["polygon"] = pd.Series(dict(regrown))
    seconds = time.perf_counter() - start
    print(
        f"truth: {source}; {truth['tile_id'].nunique()} tiles, {len(truth)} nuclei; "
        f"{len(masks)} clicks from {masks['annotator'].nunique()} simulated pathologists "
        f"(3 per tile); {len(nuclei)} consensus nuclei; {seconds:.1f} s"
    )
    tp, fp, fn, pairs = match_truth(truth, nuclei, "polygon")
    truth_label = truth["label"]
    print(f"\n{'rule':<12} {'det F1':>7} {'TP':>6} {'FP':>5} {'FN':>5} {'label acc':>9} "
          f"{'undet.':>7} {'truth in set':>12} {'acc (undet=wrong)':>17}")  # fmt: skip
    for rule, col in (("majority", "label_majority"), ("dawid-skene", "label_dawid_skene")):
        t_idx = [t for t, _ in pairs]
        p_idx = [p for _, p in pairs]
        pred = nuclei.loc[p_idx, col].to_numpy(dtype=object)
        true = truth_label.loc[t_idx].to_numpy(dtype=object)
        determined = np.array([isinstance(v, str) for v in pred])
        acc = float(np.mean(pred[determined] == true[determined])) if determined.any() else np.nan
        sets = nuclei.loc[p_idx, "labels"].to_numpy(dtype=object)
        in_set = [t in s for t, s, d in zip(true, sets, determined, strict=True) if not d]
        print(
            f"{rule:<12} {f1(tp, fp, fn):>7.3f} {tp:>6d} {fp:>5d} {fn:>5d} {acc:>9.3f} "
            f"{1 - determined.mean():>7.3f} {np.mean(in_set) if in_set else np.nan:>12.3f} "
            f"{np.mean(pred == true):>17.3f}"
        )
    print(f"\n{'single pathologist':<18} {'tiles':>5} {'det F1':>7} {'label acc':>9}")
    for annotator, part in masks.groupby("annotator"):
        tiles = set(part["tile_id"])
        sub_truth = truth.loc[truth["tile_id"].isin(tiles)]
        a_tp, a_fp, a_fn, a_pairs = match_truth(sub_truth, part)
        lab = part.loc[[p for _, p in a_pairs], "label"].to_numpy(dtype=object)
        tru = truth_label.loc[[t for t, _ in a_pairs]].to_numpy(dtype=object)
        typed = lab != "unknown"
        print(
            f"{annotator:<18} {len(tiles):>5d} {f1(a_tp, a_fp, a_fn):>7.3f} "
            f"{np.mean(lab[typed] == tru[typed]):>9.3f}"
        )
    report = agreement_report(result.assignments, nuclei)
    print("\nFleiss' kappa, all tiles with 3 annotators:", end=" ")
    print(f"{report.fleiss['fleiss_kappa'].iloc[-1]:.3f}" if len(report.fleiss) else "n/a")
    fit = result.dawid_skene
    if fit is not None:
        print("Dawid-Skene estimated accuracy per annotator:")
        print("  " + ", ".join(f"{a}: {v:.3f}" for a, v in sorted(fit.accuracy().items())))


if __name__ == "__main__":
    main()
