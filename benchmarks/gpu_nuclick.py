"""NuClick throughput on a GPU: nuclei per second at batch 256 in bfloat16 (target >= 3,000).

Standalone, under 2 minutes on an H100; prints a table. Two numbers:
- network only: forward passes of (256, 5, 128, 128) batches (inputs already on the GPU);
- end to end: `nuclick.predict_many` on 448 px tiles with 200 clicks each (guidance maps
  built on the CPU, host-to-device copies, per-patch post-processing on the CPU).

    python benchmarks/gpu_nuclick.py [--batch 256] [--tiles 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nuclick.model import NuClick, count_parameters
from nuclick.predict import PredictOptions, predict_many


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def network_only(model: torch.nn.Module, batch: int, iters: int, *, channels_last: bool) -> float:
    x = torch.rand(batch, 5, 128, 128, device="cuda")
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            model(x)
        _sync()
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        _sync()
    return batch * iters / (time.perf_counter() - start)


def end_to_end(model: torch.nn.Module, batch: int, tiles: int, clicks: int) -> float:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (448, 448, 3), dtype=np.uint8) for _ in range(tiles)]
    points = [rng.uniform(0, 448, (clicks, 2)) for _ in range(tiles)]
    opts = PredictOptions(batch_size=batch)
    predict_many(images[:2], points[:2], model, options=opts, device="cuda")  # warm-up
    _sync()
    start = time.perf_counter()
    predict_many(images, points, model, options=opts, device="cuda")
    _sync()
    return tiles * clicks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--clicks", type=int, default=200)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cudnn.benchmark = True
    model = NuClick().cuda().eval()
    rows = [
        ("device", torch.cuda.get_device_name(0)),
        ("parameters", f"{count_parameters(model):,}"),
    ]
    rows.append(
        (
            "network bf16, NCHW (nuclei/s)",
            f"{network_only(model, args.batch, args.iters, channels_last=False):,.0f}",
        )
    )
    model_cl = model.to(memory_format=torch.channels_last)
    rows.append(
        (
            "network bf16, channels_last (nuclei/s)",
            f"{network_only(model_cl, args.batch, args.iters, channels_last=True):,.0f}",
        )
    )
    torch.cuda.reset_peak_memory_stats()
    rate = end_to_end(model, args.batch, args.tiles, args.clicks)
    rows.append(
        (f"end to end, {args.tiles} tiles x {args.clicks} clicks (nuclei/s)", f"{rate:,.0f}")
    )
    rows.append(
        ("peak GPU memory end to end (GiB)", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}")
    )
    width = max(len(k) for k, _ in rows)
    print(f"NuClick, batch {args.batch}, 128 px patches, bfloat16 autocast")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
