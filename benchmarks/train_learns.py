"""Does `histocurate train` learn? The tiny preset on a synthetic dataset, on the CPU, for a
fixed wall-time budget, against two trivial baselines, and with --label-sets against
ignoring undetermined nuclei.

The dataset: a synthetic campaign (the cohort's nucleus outlines per type, on a jittered grid
so that neighbours touch; pink stroma, purple nuclei, noise), 3 annotators per tile who
disagree on some nuclei (consensus without majority: an undetermined nucleus with its label
set), built with ``histocurate dataset build --source consensus`` into 3 folds grouped by
slide. Fold 0 is held out. All rows are scored by the same code (the training loop's
validation: HoVer post-processing, bPQ/DQ/SQ as tile means, pooled PQ, centroid F1 within
12 px, per-class F1 with the label-set rules):

- all background: no nucleus predicted;
- haematoxylin threshold: colour deconvolution (skimage ``rgb2hed``), Otsu threshold of the
  H channel, holes filled, blobs under 10 px removed, 4-connected components (no type);
- tiny, before: the tiny model as initialised (the run's seed), nothing trained;
- tiny, after: the same after ``--minutes`` of training (its last validation);
- then the label-set option: the same number of epochs with ``--label-sets``, compared
  with the run above at every validation both made (the same steps: the loop is
  deterministic, a time budget does not change its trajectory).

Also printed first: training throughput of the loop's step (forward, losses, backward,
Adam) on this machine for 1 and 2 torch threads, with and without channels-last.

    python benchmarks/train_learns.py [--minutes 10] [--no-label-sets] [--tiles 96]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS_MIX = (
    "cancer_cell",
    "lymphocyte",
    "fibroblast",
    "plasmocyte",
    "macrophage",
    "endothelial_cell",
    "neutrophil",
)


def build(root: Path, n_tiles: int, side: int) -> str:
    from histocurate.config import load_config
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.synthetic import SyntheticTile, write_campaign

    rng = np.random.default_rng(0)
    per_slide = 12
    tiles = []
    for k in range(n_tiles):
        s = k // per_slide
        n = (side // 37) ** 2
        labels = list(rng.choice(LABELS_MIX, size=n, p=[0.3, 0.25, 0.15, 0.1, 0.08, 0.07, 0.05]))
        tiles.append(
            SyntheticTile(
                f"s{s}_t{k}",
                f"s{s}",
                indication=("LUAD", "COAD")[s % 2],
                annotators=("ann1", "ann2", "ann3"),
                side=side,
                spacing=37,
                labels=labels,
                disagree=2,
                seed=k,
            )
        )
    write_campaign(root, tiles)
    run = run_dataset_build(load_config(root, environ={}), name="syn", source="consensus")
    assert run.path is not None, run.failure_lines()
    info = run.info
    print(
        f"dataset syn@{run.version}: {info['counts']['tiles']} tiles of {side} px, "
        f"{info['counts']['nuclei']} nuclei ({info['counts']['undetermined']} undetermined), "
        f"folds {info['counts']['tiles_per_fold']}"
    )
    return f"syn@{run.version}"


def throughput(side: int) -> list[dict[str, Any]]:
    """Steps of the tiny model (batch 8) per configuration: images/s."""
    import torch

    from histocurate.cellvit.finetune import new_model
    from histocurate.cellvit.losses import CellViTLoss
    from histocurate.cellvit.presets import preset

    s = preset("tiny", tile_size=side)
    rows = []
    x = torch.randint(0, 255, (8, 3, side, side), dtype=torch.uint8)
    targets = {
        "np_target": torch.randint(0, 2, (8, side, side)),
        "hv_target": torch.rand(8, 2, side, side) * 2 - 1,
        "nt_target": torch.randint(0, 14, (8, side, side)),
    }
    for threads in (1, 2):
        for channels_last in (False, True):
            torch.set_num_threads(threads)
            model = new_model(s, n_types=13, input_size=side)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            loss_fn = CellViTLoss()
            times = []
            for i in range(6):
                start = time.perf_counter()
                inp = model.normalise(x)
                if channels_last:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                loss_fn(model(inp), **targets).total.backward()
                opt.step()
                opt.zero_grad()
                if i >= 2:  # the first steps warm the allocator and kernels up
                    times.append(time.perf_counter() - start)
            rows.append(
                {
                    "threads": threads,
                    "channels_last": channels_last,
                    "images/s": 8 / float(np.median(times)),
                }
            )
    return rows


def h_threshold(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    h = rgb2hed(image)[..., 0]
    mask = ndi.binary_fill_holes(h > threshold_otsu(h))
    mask = remove_small_objects(mask, max_size=9)  # blobs under 10 px
    labels, _ = ndi.label(mask)
    return labels.astype(np.int32)


def baseline(val: Any, classes: Any, metrics: Any, predict: Any) -> dict[str, float]:
    import pandas as pd

    from histocurate.cellvit.validate import ValTile
    from histocurate.metrics.maps import instance_centroids, relabel_contiguous

    records = []
    for i in range(len(val)):
        item = val[i]
        pred = predict(item["image"])
        c = relabel_contiguous(pred)
        xy = instance_centroids(c.labels, c.n)
        cells = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "type": np.zeros(c.n, np.int64)})
        tile = ValTile(
            tile_id=item["tile_id"],
            mpp=item["mpp"],
            true_inst=item["inst_map"],
            true_types=classes.types(item["type_map"]),
            true_sets=classes.bits(item["set_map"]),
            pred_inst=c.labels.astype(np.int32),
            cells=cells,
        )
        records.append(metrics.score_tile(tile))
    return metrics.summarise(records)


def train(
    root: Path, spec: str, *, minutes: float | None, epochs: int, label_sets: bool
) -> dict[str, Any]:
    from histocurate.config import load_config
    from histocurate.training import run_train

    config = load_config(
        root,
        {
            "train": {
                "max_minutes": minutes,
                "epochs": epochs,
                "device": "cpu",
                "workers": 1,
                "val_every": 10,
                "label_sets": label_sets,
            }
        },
        environ={},
    )
    start = time.perf_counter()
    result = run_train(config, dataset=spec, fold=0, preset="tiny")
    outcome = result.outcomes[0]
    assert outcome.status == "done", outcome.error
    extra = dict(outcome.extra)
    extra["minutes"] = (time.perf_counter() - start) / 60
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--label-sets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train with --label-sets for as many epochs, and compare",
    )
    parser.add_argument("--tiles", type=int, default=96)
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    import torch

    root = args.workspace or Path(tempfile.mkdtemp(prefix="train-learns-")) / "ws"
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch "
        f"{torch.__version__}; workspace {root}"
    )
    spec = build(root, args.tiles, args.side)
    print(
        "\ntraining throughput of the tiny model (batch 8, one step = forward + losses + "
        f"backward + AdamW), {args.side} px:"
    )
    probe = throughput(args.side)
    for row in probe:
        print(
            f"  {row['threads']} thread(s), channels-last {row['channels_last']!s:5}: "
            f"{row['images/s']:.1f} images/s"
        )
    threads = max(probe, key=lambda r: r["images/s"])["threads"]
    torch.set_num_threads(threads)  # the faster here and now (the machine may be shared)
    print(f"training with {threads} torch thread(s) and 1 loader worker")

    from histocurate.cellvit.distributed import DistContext
    from histocurate.cellvit.finetune import new_model
    from histocurate.cellvit.loader import ClassMap
    from histocurate.cellvit.presets import preset
    from histocurate.cellvit.validate import validate
    from histocurate.config import load_config
    from histocurate.dataset import NucleiDataset
    from histocurate.training.inputs import resolve
    from histocurate.training.metrics import ProjectMetrics

    choice = resolve(load_config(root, environ={}), spec)
    val = NucleiDataset(choice.path, folds=[0], label_sets=True)
    classes = ClassMap.of([int(c["index"]) for c in choice.classes])
    metrics = ProjectMetrics(choice.class_ids)
    rows: dict[str, dict[str, Any]] = {}
    rows["all background"] = baseline(
        val, classes, metrics, lambda im: np.zeros(im.shape[:2], np.int32)
    )
    rows["haematoxylin threshold"] = baseline(val, classes, metrics, h_threshold)
    s = preset("tiny")
    untrained = new_model(s, n_types=len(choice.classes), input_size=args.side // 14 * 14)
    rows["tiny, before"] = validate(untrained, val, metrics, classes, ctx=DistContext())
    extras: dict[str, dict[str, Any]] = {}
    print(f"\ntraining 'tiny, after' for {args.minutes} min ...", flush=True)
    extras["tiny, after"] = train(root, spec, minutes=args.minutes, epochs=10**5, label_sets=False)
    rows["tiny, after"] = extras["tiny, after"]["validation"]
    if args.label_sets:
        # the loop is deterministic: the time budget does not change the trajectory, so the
        # run above is the 'ignore' arm, validated at the same steps as this one
        epochs = max(10, 10 * (extras["tiny, after"]["epochs"] // 10))
        print(f"\ntraining 'tiny + label sets' for the same {epochs} epochs ...", flush=True)
        extras["tiny + label sets"] = train(
            root, spec, minutes=None, epochs=epochs, label_sets=True
        )
    print(f"\nvalidation on fold 0 ({len(val)} tiles), {args.side} px, 0.25 um/px:\n")
    print("| | bPQ | DQ | SQ | PQ pooled | F1 detection | mF1 | tiles seen | epochs | best bPQ |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        x = extras.get(name, {})
        best = x.get("best_bpq")
        print(
            f"| {name} | {r['bpq']:.3f} | {r['dq']:.3f} | {r['sq']:.3f} | "
            f"{r['pq_pooled']:.3f} | {r['f1_detection']:.3f} | {r['mf1']:.3f} | "
            f"{x.get('images', 0)} | {x.get('epochs', 0)} | "
            f"{'' if best is None else f'{best:.3f}'} |"
        )
    for name, x in extras.items():
        print(
            f"{name}: {x['images']} tiles in {x['minutes']:.1f} min "
            f"({x['images_per_s']} images/s incl. validation), run {x['run']}"
        )
    if "tiny + label sets" in extras:
        compare(extras["tiny, after"]["run"], extras["tiny + label sets"]["run"], choice)


def compare(ignore: str, sets: str, choice: Any) -> None:
    """Both arms at every validation they share (same epochs, same steps)."""
    from histocurate.cellvit.rundir import MetricsLog, RunDir, validation_table

    tables = []
    for path in (ignore, sets):
        log = MetricsLog(RunDir(Path(path)))
        log.resume(10**18)
        tables.append(validation_table(log.frame()).set_index(["epoch", "step"]))
    common = tables[0].index.intersection(tables[1].index)
    if not len(common):
        print("\nno validation at the same step in both runs: train longer (--minutes)")
        return
    shown = ["bpq", "dq", "f1_detection", "mf1"] + [
        f"f1_{c}" for c in choice.class_ids if f"f1_{c}" in tables[0].columns
    ]
    print("\nignoring undetermined nuclei (the paper) vs --label-sets, same steps, fold 0:\n")
    print("| epoch | step | " + " | ".join(f"{m} ignore / sets" for m in shown[:4]) + " |")
    print("|---|---|" + "---|" * 4)
    for epoch, step in common:
        a, b = tables[0].loc[(epoch, step)], tables[1].loc[(epoch, step)]
        cells = " | ".join(f"{a[m]:.3f} / {b[m]:.3f}" for m in shown[:4])
        print(f"| {epoch} | {step} | {cells} |")
    last = common[-1]
    print(f"\nper-class F1 at epoch {last[0]} (step {last[1]}), ignore / label sets:\n")
    print("| class | ignore | label sets |")
    print("|---|---|---|")
    for m in shown[4:]:
        a, b = tables[0].loc[last, m], tables[1].loc[last, m]
        if not (np.isnan(a) and np.isnan(b)):
            print(f"| {m.removeprefix('f1_')} | {a:.3f} | {b:.3f} |")


if __name__ == "__main__":
    main()
