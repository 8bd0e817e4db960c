"""NuClick throughput on a GPU at batch 256 in bfloat16 (target >= 3,000 nuclei/s end to end).

Standalone, well under 100 s on an H100 (about 10 s of it makes the synthetic tiles);
prints one table. Rows:
- network only: forward passes of (256, 5, 128, 128) batches already on the GPU, random
  weights (NCHW and channels_last);
- post-processing only (CPU): what `nuclick.predict_many` does after the network, from
  probability maps to instance maps and polygons, per tile: the plain per-click reference
  (`nuclick.testing.reference`, the code before the speed-up), the fast path in one process, and
  the fast path over a pool of worker processes;
- CPU side of `predict_many`: guidance maps, batching and post-processing with the
  network replaced by the prepared maps (no GPU), in-process and with the pool;
- end to end: `predict_many` on the GPU (inputs built on the CPU, host-to-device copy,
  bf16 forward of the real 66.8 M-parameter network, pinned device-to-host copy,
  post-processing overlapped with the next batch), in-process and with the pool.

Realistic probability maps: random weights give noise masks (hundreds of specks per
patch) that make post-processing far slower than it is with a trained model, so every
row that post-processes uses maps made from the truth of synthetic H&E tiles
(`histocurate.synth`, 448 px tiles at 0.25 um/px, clicks at the true centroids): per
click the clicked nucleus blurred to a soft edge, faint neighbours and smooth noise
(`nuclick.testing.synthetic.oracle_probabilities`: about two components per patch, Dice 0.98 to
the truth). End to end, the network runs for real on every batch and its output is then
swapped for the prepared maps of the same clicks (timing of the network unchanged).

    python benchmarks/gpu_nuclick.py [--batch 256] [--repeat 2] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from nuclick.guidance import click_pixels, patch_origins
from nuclick.model import NuClick, count_parameters
from nuclick.postprocess import from_probabilities
from nuclick.predict import PredictOptions, duplicate_groups, predict_many
from nuclick.testing.reference import reference_from_probabilities
from nuclick.testing.synthetic import oracle_probabilities


@dataclass
class Tile:
    image: np.ndarray
    points: np.ndarray  # (N, 2) x, y
    case: tuple  # (shape, rc, same_as, probs, origins): arguments of from_probabilities


def realistic_tiles(folder: Path, *, slides: int = 2, size: int = 1792) -> list[Tile]:
    """Synthetic H&E tiles, clicks at true centroids, oracle probability maps per click."""
    from segment_quality import synthetic_tiles  # benchmarks/ is on sys.path

    out = []
    for k, (image, inst, nuclei) in enumerate(
        synthetic_tiles(folder, slides=slides, size=size, tile_px=448, seed=0, indications=["LUAD"])
    ):
        points = nuclei[["x", "y"]].to_numpy(dtype=np.float64)
        rc = click_pixels(points)
        same = duplicate_groups(points, PredictOptions().duplicate_px)
        run = np.flatnonzero(same == np.arange(len(points)))
        origins = patch_origins(rc[run], inst.shape, 128)
        nucleus = inst[rc[:, 0], rc[:, 1]][run]
        probs = oracle_probabilities(inst, rc[run], nucleus, origins, seed=k)
        out.append(Tile(image, points, (inst.shape, rc, same, probs, origins)))
    return out


class OracleOutput(torch.nn.Module):
    """Runs ``net`` (when given) for its cost, then returns the prepared logits instead."""

    def __init__(self, probs: np.ndarray, net: torch.nn.Module | None, device: str) -> None:
        super().__init__()
        self.net = net
        logits = torch.logit(torch.from_numpy(probs).double(), eps=1e-7).float()[:, None]
        self.logits = logits.to(device)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.net is not None:
            self.net(x)
        out = self.logits[self.seen : self.seen + len(x)]
        self.seen += len(x)
        if len(out) < len(x):  # the padded tail of the last batch
            out = torch.cat([out, out.new_zeros((len(x) - len(out), *out.shape[1:]))])
        return out


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def network_only(model: torch.nn.Module, batch: int, iters: int, *, channels_last: bool) -> float:
    x = torch.rand(batch, 5, 128, 128, device="cuda")
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        torch.cuda.synchronize()
    return time.perf_counter() - start


def postprocess_rows(tiles: list[Tile], workers: int) -> list[tuple[str, str]]:
    n = sum(len(t.points) for t in tiles)
    rows = []
    start = time.perf_counter()
    for t in tiles[: max(1, len(tiles) // 4)]:  # the slow reference on a quarter
        reference_from_probabilities(*t.case)
    sub = sum(len(t.points) for t in tiles[: max(1, len(tiles) // 4)])
    rows.append(("post-processing, reference, 1 process", _rate(sub, time.perf_counter() - start)))
    start = time.perf_counter()
    for t in tiles:
        from_probabilities(*t.case)
    rows.append(("post-processing, fast, 1 process", _rate(n, time.perf_counter() - start)))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_post, tiles[:workers]))  # start the workers
        start = time.perf_counter()
        list(pool.map(_post, tiles))
        seconds = time.perf_counter() - start
    rows.append((f"post-processing, fast, {workers} processes", _rate(n, seconds)))
    return rows


def _post(tile: Tile) -> int:
    return len(from_probabilities(*tile.case).polygons)


def pipeline(
    tiles: list[Tile], net: torch.nn.Module | None, device: str, opts: PredictOptions
) -> float:
    probs = np.concatenate([t.case[3] for t in tiles])
    model = OracleOutput(probs, net, device)
    images, points = [t.image for t in tiles], [t.points for t in tiles]
    predict_many(images[:8], points[:8], model, options=opts, device=device)  # warm-up, pool
    model.seen = 0
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    predict_many(images, points, model, options=opts, device=device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2, help="tile set repeats (more clicks)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cudnn.benchmark = True
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tiles = realistic_tiles(Path(tmp)) * args.repeat
    n = sum(len(t.points) for t in tiles)
    made = time.perf_counter() - began
    model = NuClick().cuda().eval()
    rows = [
        ("device", torch.cuda.get_device_name(0)),
        ("CPU cores", str(os.cpu_count())),
        ("parameters", f"{count_parameters(model):,}"),
        ("tiles x clicks (448 px, realistic maps)", f"{len(tiles)} tiles, {n:,} clicks"),
    ]
    sec = network_only(model, args.batch, args.iters, channels_last=False)
    rows.append(("network bf16, NCHW", _rate(args.batch * args.iters, sec)))
    model_cl = NuClick().cuda().eval().to(memory_format=torch.channels_last)
    sec = network_only(model_cl, args.batch, args.iters, channels_last=True)
    rows.append(("network bf16, channels_last", _rate(args.batch * args.iters, sec)))
    del model_cl
    rows += postprocess_rows(tiles, args.workers)
    for workers in (0, args.workers):
        opts = PredictOptions(batch_size=args.batch, workers=workers)
        sec = pipeline(tiles, None, "cpu", opts)
        rows.append((f"CPU side of predict_many (no network), {workers} workers", _rate(n, sec)))
    torch.cuda.reset_peak_memory_stats()
    for workers in (0, args.workers):
        opts = PredictOptions(batch_size=args.batch, workers=workers)
        sec = pipeline(tiles, model, "cuda", opts)
        rows.append((f"end to end predict_many, {workers} workers", _rate(n, sec)))
    rows.append(
        ("peak GPU memory end to end (GiB)", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}")
    )
    rows.append(("making the tiles and maps (s)", f"{made:.1f}"))
    rows.append(("total wall time (s)", f"{time.perf_counter() - began:.1f}"))
    width = max(len(k) for k, _ in rows)
    print(f"NuClick, batch {args.batch}, 128 px patches, bfloat16 autocast; rates in nuclei/s")
    for key, value in rows:
        print(f"{key:<{width}}  {value:>12}")


if __name__ == "__main__":
    main()
