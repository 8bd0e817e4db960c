"""Speed of the evaluation metrics (issue 8): PQ + per-class F1 on 530 tiles of 448 x 448
with ~130 nuclei each, against a straightforward per-instance reference written below,
and the full `evaluate` (tables -> counts -> 1,000 bootstrap resamples -> table).

    python benchmarks/metrics.py [--tiles 530] [--ref-tiles 53] [--boot 1000]

Prints one table of measured seconds. The reference (one boolean mask per nucleus, as
HoVer-Net's get_fast_pq) is slow, so it runs on the first --ref-tiles tiles and its time
for all tiles is extrapolated (marked); the counts of both must agree on those tiles.
Target (issue 8): full evaluation with bootstrap under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from data_schema import INSTANCES
from histocurate.io import write_table
from histocurate.labels import LABELS
from histocurate.metrics import (
    EvaluationOptions,
    class_counts,
    classification_scores,
    encode_label_sets,
    encode_predictions,
    evaluate,
    instances_from_frame,
    match_instances,
    rasterize,
    resample_sums,
    resample_weights,
)
from histocurate.metrics.output import evaluate_files
from histocurate.metrics.summary import summarise
from histocurate.testing.metrics_data import synthetic_prediction, synthetic_truth

SIZE = 448


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _now()
    return wall - t0[0], cpu - t0[1]


def reference_tile(tmap: np.ndarray, pmap: np.ndarray, tcls: list[int], pcls: list[int]) -> tuple:
    """Per-instance reference: masks, IoU > 0.5 pairs, HoVer-Net class counts, in loops."""
    pairs, iou_sum = [], 0.0
    for t in range(1, tmap.max() + 1):
        tm = tmap == t
        if not tm.any():
            continue
        for p in np.unique(pmap[tm]):
            if p == 0:
                continue
            pm = pmap == p
            iou = (tm & pm).sum() / (tm | pm).sum()
            if iou > 0.5:
                pairs.append((t - 1, int(p) - 1))
                iou_sum += iou
    n_t, n_p = len(tcls), len(pcls)
    tp = len(pairs)
    cls = np.zeros((len(LABELS), 4))  # tp, fp, fn (paired); fn_d, fp_d folded below
    un_t, un_p = set(range(n_t)), set(range(n_p))
    for t, p in pairs:
        un_t.discard(t)
        un_p.discard(p)
        if tcls[t] == pcls[p]:
            cls[tcls[t], 0] += 1
        else:
            cls[pcls[p], 1] += 1
            cls[tcls[t], 2] += 1
    fn_d = np.bincount([tcls[t] for t in un_t], minlength=len(LABELS))
    fp_d = np.bincount([pcls[p] for p in un_p], minlength=len(LABELS))
    return tp, n_p - tp, n_t - tp, iou_sum, cls, fn_d, fp_d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=530)
    parser.add_argument("--ref-tiles", type=int, default=53)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()

    truth = synthetic_truth(n_tiles=args.tiles, nuclei_per_tile=130, tile_size=SIZE, seed=0)
    truth["label"] = [s[0] for s in truth["labels"]]  # single-label truth for the comparison
    truth = truth.drop(columns=["labels"])
    pred = synthetic_prediction(truth.assign(labels=[[v] for v in truth.label]), seed=1)
    pred2 = synthetic_prediction(truth.assign(labels=[[v] for v in truth.label]), seed=2)
    tiles = sorted(truth.tile_id.unique())
    tgroups, pgroups = dict(list(truth.groupby("tile_id"))), dict(list(pred.groupby("tile_id")))
    empty = pred.iloc[:0]
    tmaps = [rasterize(list(tgroups[t].polygon), shape=(SIZE, SIZE)) for t in tiles]
    pmaps = [rasterize(list(pgroups.get(t, empty).polygon), shape=(SIZE, SIZE)) for t in tiles]
    rows = []

    # 1. Maps in memory: vectorised PQ + F1 per tile vs the reference.
    t0 = _now()
    fast = []
    for k, t in enumerate(tiles):
        m = match_instances(tmaps[k], pmaps[k])
        sets = encode_label_sets(list(tgroups[t].label))
        pcls = encode_predictions(list(pgroups.get(t, empty).label))
        counts = class_counts(sets, pcls, m.true_ids - 1, m.pred_ids - 1)[0]
        fast.append((m.counts, counts))
    f1 = classification_scores(sum(c for _, c in fast))["f1"]
    fast_s = _since(t0)
    n_ref = min(args.ref_tiles, len(tiles))
    t0 = _now()
    ref = []
    for k in range(n_ref):
        t = tiles[k]
        tcls = [LABELS.index(v) for v in tgroups[t].label]
        pcls_l = [LABELS.index(v) for v in pgroups.get(t, empty).label]
        ref.append(reference_tile(tmaps[k], pmaps[k], tcls, pcls_l))
    ref_s = tuple(v * len(tiles) / max(n_ref, 1) for v in _since(t0))
    for k in range(n_ref):
        r, (pq, counts) = ref[k], fast[k]
        assert (r[0], r[1], r[2]) == (pq.tp, pq.fp, pq.fn), f"tile {k}: counts differ"
        assert abs(r[3] - pq.iou_sum) < 1e-9
        assert np.array_equal(r[4][:, 0], counts[:, 0]) and np.array_equal(r[5], counts[:, 5])
    n_nuclei = len(truth)
    rows.append(("PQ + F1 on maps, vectorised", fast_s, f"{len(tiles)} tiles, {n_nuclei} nuclei"))
    rows.append(
        (
            f"PQ + F1 on maps, per-instance reference (x{len(tiles) / n_ref:.0f} of {n_ref} tiles)",
            ref_s,
            f"ratio {ref_s[1] / fast_s[1]:.0f}x (CPU); counts equal on {n_ref} tiles",
        )
    )

    # 2. Bootstrap alone: 1,000 resamples of per-tile counts.
    det = np.array([[c.tp, c.fp, c.fn, c.iou_sum, 0, 0] for c, _ in fast], dtype=float)
    cls = np.stack([c for _, c in fast])
    t0 = _now()
    w = resample_weights(len(tiles), args.boot, seed=0)
    summarise(resample_sums(w, det), resample_sums(w, cls))
    rows.append(
        (
            f"bootstrap {args.boot} x {len(tiles)} tiles (counts -> metrics)",
            _since(t0),
            "matrix product on per-tile counts",
        )
    )

    # 3. Full evaluation from tables (polygons rasterised per tile), with bootstrap.
    t_inst = instances_from_frame(truth, origin="truth")
    p_inst = instances_from_frame(pred, origin="pred")
    t0 = _now()
    ev = evaluate(t_inst, [("pred", p_inst)], options=EvaluationOptions(n_boot=args.boot))
    rows.append(
        (
            "evaluate(): 1 prediction, in memory",
            _since(t0),
            f"PQ {ev.table.value.iloc[2]:.3f}",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        truth.to_parquet(root / "truth.parquet")
        cols = ["tile_id", "x", "y", "polygon", "label"]
        write_table(pred[cols], root / "a.parquet", INSTANCES)
        write_table(pred2[cols], root / "b.parquet", INSTANCES)
        t0 = _now()
        evaluate_files(
            root / "truth.parquet",
            [root / "a.parquet"],
            options=EvaluationOptions(n_boot=args.boot),
        )
        rows.append(
            (
                "evaluate from Parquet files: 1 prediction",
                _since(t0),
                "read + rasterise + count + bootstrap",
            )
        )
        t0 = _now()
        evaluate_files(
            root / "truth.parquet",
            [root / "a.parquet", root / "b.parquet"],
            options=EvaluationOptions(n_boot=args.boot),
        )
        rows.append(
            (
                "evaluate from Parquet files: 2 predictions + paired p-values",
                _since(t0),
                "",
            )
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'wall s':>7}  {'CPU s':>7}  notes")
    for name, (wall, cpu), note in rows:
        print(f"{name:<{width}}  {wall:7.2f}  {cpu:7.2f}  {note}")
    print(f"mean F1 over classes (sanity): {np.nanmean(f1):.3f}")


if __name__ == "__main__":
    main()
