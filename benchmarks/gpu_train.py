"""GPU training throughput: H0-mini CellViT (HistoPLUS, 142.7 M parameters) at 448 px, bf16.

A prepared script for a machine with one CUDA GPU (run it from the repository root with the
project's environment). The model is histocurate's own (`histocurate.cellvit`), built with
random weights (the H0-mini architecture: same FLOPs and memory as the released weights),
trained by the production step (`histocurate.cellvit.stepper.Stepper`: bf16 autocast, fp32
losses, Adam), so the timed code path is the one ``histocurate train`` runs. It prints:

1. model only (tiles and targets already on the GPU): images/s and peak memory per batch
   size, doubling from 4 until out of memory; the best batch size; channels-last and
   torch.compile on and off at batch 16; MFU = model FLOPs (forward + backward, counted by
   torch's FlopCounterMode) x images/s / the card's dense bf16 peak;
2. the loader alone (NucleiDataset -> CellViT's augmentations -> targets, in N worker
   processes): tiles/s for several worker counts;
3. end to end (`histocurate.cellvit.train.Trainer` on a synthetic HistoTRAIN-like dataset
   of 448 px tiles at 40x, paper preset, no validation): images/s of the steady steps.

Goal (issue 15): >= 150 images/s end to end on one H100-class GPU (150 epochs of 1,415
tiles in under 25 min). Where the loader is the limit, the loader table says how many
workers it would take, or that GPU augmentation is needed.

    python benchmarks/gpu_train.py [--tiles 512] [--workers 4,8,16] [--peak-tflops T]
    python benchmarks/gpu_train.py --dry-run    # tiny model on the CPU: checks the script

Without a CUDA GPU (and without --dry-run) it stops at once with exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets
PEAKS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "T4": 65.0,
}


def card_peak(name: str) -> float | None:
    for key in sorted(PEAKS, key=len, reverse=True):
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return PEAKS[key]
    return None


def settings_for(dry: bool, **over: Any) -> Any:
    from histocurate.cellvit.model import TINY_ARCH
    from histocurate.cellvit.presets import preset

    base: dict[str, Any] = {
        "pretrained": False,
        "precision": "fp32" if dry else "bf16",
        "augment": True,
        "val_every": 10**6,
    }
    if dry:
        base.update(arch=dict(TINY_ARCH), decoder_divisor=16, tile_size=56)
    return preset("paper", **{**base, **over})


def synthetic_batch(size: int, batch: int, n_types: int, device: torch.device) -> Any:
    from histocurate.cellvit.loader import Batch

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    targets = {
        "np_target": torch.randint(0, 2, (batch, size, size), generator=g),
        "hv_target": torch.rand(batch, 2, size, size, generator=g) * 2 - 1,
        "nt_target": torch.randint(0, n_types + 1, (batch, size, size), generator=g),
        "sets": torch.zeros(batch, size, size, dtype=torch.int32),
    }
    return Batch(images, targets, [str(i) for i in range(batch)], list(range(batch))).to(device)


def model_only(s: Any, batch: int, device: torch.device, steps: int) -> tuple[float, float]:
    """(images/s, peak GiB) of the training step at ``batch``."""
    from histocurate.cellvit.distributed import DistContext
    from histocurate.cellvit.finetune import new_model
    from histocurate.cellvit.stepper import Stepper

    size = s.tile_size
    stepper = Stepper(s, new_model(s, n_types=13, input_size=size), DistContext(device=device))
    stepper.set_epoch(1)
    data = synthetic_batch(size, batch, 13, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for k in range(steps + 3):  # 3 warm-up steps (allocator, kernels, compile)
        sync(device)
        start = time.perf_counter()
        stepper.backward([data], step=k)
        stepper.apply()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else math.nan
    del stepper, data
    free(device)
    return batch / float(np.median(times[3:])), peak


def flops_per_image(s: Any, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from histocurate.cellvit.finetune import new_model
    from histocurate.cellvit.losses import CellViTLoss
    from histocurate.torchutil import autocast

    model = new_model(s, n_types=13, input_size=s.tile_size).to(device)
    data = synthetic_batch(s.tile_size, 2, 13, device)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, s.precision):
            out = model(model.normalise(data.images))
        CellViTLoss()(out, **data.targets).total.backward()
    total = float(counter.get_total_flops()) / 2
    del model, data
    free(device)
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_dataset(root: Path, tiles: int, side: int) -> Path:
    from histocurate.config import load_config
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.synthetic import SyntheticTile, write_campaign

    per_slide = max(1, min(14, tiles // 6))  # HistoTRAIN: ~14 tiles per slide
    made = [
        SyntheticTile(
            f"s{k // per_slide}_t{k}",
            f"s{k // per_slide}",
            side=side,
            seed=k,
            unknown=2,
            spacing=50.0 * side / 448,
        )
        for k in range(tiles)
    ]
    write_campaign(root, made)
    run = run_dataset_build(load_config(root, environ={}), name="gpu", source="masks")
    assert run.path is not None, run.failure_lines()
    return run.path


def trainer_for(s: Any, path: Path, device: torch.device, run: Path) -> Any:
    from histocurate.cellvit.distributed import DistContext
    from histocurate.cellvit.finetune import new_model
    from histocurate.cellvit.rundir import RunDir
    from histocurate.cellvit.train import Trainer
    from histocurate.dataset import NucleiDataset
    from histocurate.training.inputs import DatasetChoice, train_data

    dataset = NucleiDataset(path)
    choice = DatasetChoice(
        name="gpu",
        version="bench",
        path=path,
        content_hash="",
        folds=tuple(dataset.folds),
        classes=tuple(dataset.classes),
        mpp=0.25,
        tile_size=s.tile_size,
    )
    data = train_data(s, choice, choice.folds[0], patch=14, train_config={})
    data.val = None
    model = new_model(s, n_types=len(choice.classes), input_size=data.input_size)
    return Trainer(s, model, data, RunDir(run), ctx=DistContext(device=device))


def loader_only(t: Any, batches: int) -> float:
    """Tiles/s of the training loader alone (epochs after epoch, past its first 2 batches)."""
    count, start, seen = 0, 0.0, 0
    for epoch in range(10**6):
        t.sampler.set_position(epoch, 0)
        for batch in t.loader:
            seen += 1
            if seen == 3:  # workers started, first batches out
                start, count = time.perf_counter(), 0
            count += len(batch.tile_ids)
            if seen >= batches + 3:
                return count / (time.perf_counter() - start)
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=512, help="tiles of the end-to-end set")
    parser.add_argument("--workers", default="4,8,16", help="loader workers to try")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's bf16 peak")
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_train.py needs a CUDA GPU and none is visible here (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); on a CPU-only "
            "machine use benchmarks/train_learns.py, or --dry-run to check this script",
            file=sys.stderr,
        )
        return 2
    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        args.tiles, args.steps, args.max_batch = 28, 2, 8
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    peak = args.peak_tflops or (None if dry else card_peak(name))
    s = settings_for(dry)
    print(
        f"device: {name}; torch {torch.__version__}; {os.cpu_count()} CPUs; "
        f"{s.tile_size} px; {s.precision}; bf16 peak "
        f"{'unknown (--peak-tflops)' if peak is None else f'{peak:.0f} TFLOP/s'}"
    )
    per_image = flops_per_image(s, device)
    print(f"model FLOPs per image (forward + backward): {per_image / 1e9:.1f} GFLOP\n")

    print("1. model only (training step: forward, fp32 losses, backward, Adam)\n")
    print("| batch | channels-last | compile | images/s | peak GiB | MFU |")
    print("|---|---|---|---|---|---|")
    best: tuple[float, int] = (0.0, 0)
    batch = 4
    while batch <= args.max_batch:
        try:
            ips, gib = model_only(settings_for(dry, channels_last=True), batch, device, args.steps)
        except torch.OutOfMemoryError:
            free(device)
            print(f"| {batch} | yes | no | out of memory | | |")
            break
        mfu = "" if peak is None else f"{100 * per_image * ips / (peak * 1e12):.1f}%"
        print(f"| {batch} | yes | no | {ips:.1f} | {gib:.1f} | {mfu} |", flush=True)
        best = max(best, (ips, batch))
        batch *= 2
    # the dry run checks the script's paths; a CPU compile of the model takes minutes
    variants = ((False, False), (True, True), (False, True)) if not dry else ((False, False),)
    for cl, comp in variants:
        b = 16 if not dry else 4
        try:
            ips, gib = model_only(
                settings_for(dry, channels_last=cl, compile=comp), b, device, args.steps
            )
        except Exception as exc:  # a compile failure is a result too
            print(
                f"| {b} | {'yes' if cl else 'no'} | {'yes' if comp else 'no'} | "
                f"failed: {type(exc).__name__} | | |"
            )
            free(device)
            continue
        mfu = "" if peak is None else f"{100 * per_image * ips / (peak * 1e12):.1f}%"
        print(
            f"| {b} | {'yes' if cl else 'no'} | {'yes' if comp else 'no'} | {ips:.1f} | "
            f"{gib:.1f} | {mfu} |",
            flush=True,
        )
    print(f"\nbest batch size: {best[1]} ({best[0]:.1f} images/s, model only)\n")

    root = args.workspace or Path(tempfile.mkdtemp(prefix="gpu-train-")) / "ws"
    start = time.perf_counter()
    path = build_dataset(root, args.tiles, s.tile_size)
    print(
        f"dataset: {args.tiles} tiles of {s.tile_size} px built in "
        f"{time.perf_counter() - start:.0f} s ({path})\n"
    )
    print("2. the loader alone (read, decode, augment, targets; batch 16)\n")
    print("| workers | tiles/s |")
    print("|---|---|")
    loader: dict[int, float] = {}
    for w in [int(x) for x in args.workers.split(",")] if not dry else [0]:
        t = trainer_for(settings_for(dry, workers=w), path, device, root / "runs" / f"l{w}")
        loader[w] = loader_only(t, args.steps * 2)
        print(f"| {w} | {loader[w]:.1f} |", flush=True)
        del t
    print("\n3. end to end (Trainer, paper preset, 2 epochs, no validation)\n")
    print("| workers | images/s (steady steps) | peak GiB |")
    print("|---|---|---|")
    ends: dict[int, float] = {}
    for w in sorted(loader)[-2:]:
        s2 = settings_for(dry, workers=w, epochs=2)
        t = trainer_for(s2, path, device, root / "runs" / f"e{w}")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t.fit()
        rows = [r for r in t.log.rows if r["metric"] == "images_per_s"]
        steady = [r["value"] for r in rows[len(rows) // 4 :]]  # past the first epoch's start
        ends[w] = float(np.median(steady))
        gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else math.nan
        print(f"| {w} | {ends[w]:.1f} | {gib:.1f} |", flush=True)
        del t
        free(device)
    e2e = max(ends.values())
    w_best = max(ends, key=lambda k: ends[k])
    print(
        f"\nend to end: {e2e:.1f} images/s (goal >= 150): 150 epochs of 1,415 tiles in "
        f"{150 * 1415 / e2e / 60:.0f} min"
    )
    if loader[w_best] < 1.2 * best[0]:
        per_worker = loader[w_best] / max(w_best, 1)
        need = math.ceil(best[0] / max(per_worker, 1e-9))
        print(
            f"the loader limits: {loader[w_best]:.0f} tiles/s with {w_best} workers "
            f"(~{per_worker:.0f} per worker) against {best[0]:.0f} images/s of the model; "
            f"~{need} workers would feed it, or GPU augmentation"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
