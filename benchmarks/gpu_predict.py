"""Whole-slide inference on a GPU: the 100,000 x 80,000 px synthetic slide end to end.

A prepared script for a lent GPU machine (one CUDA GPU, 16 cores), run in the project's
environment (OpenSlide, torch, timm). It writes the synthetic benchmark slide once
(`histocurate.synth.write_benchmark_slide`, 0.25 um/px; not timed), tiles it with the tile
stage (timed apart), then runs the predict stage as `histocurate predict` does: windows of
784 px read ahead on threads, H0-mini CellViT (ViT-B/14 + 4 registers, the HistoPLUS
architecture, 142.7 M parameters) in bf16 on the GPU, HoVer post-processing in a pool of
CPU processes while the GPU runs the next batch, stitching, and the outputs (cells.parquet,
GeoJSON, cell_masks.json, counts, thumbnail).

Printed: the model alone (windows/s, peak GPU memory), then the end-to-end wall time and
where it went (waiting for reads, forward passes, waiting for post-processing, stitching,
writing; the post-processing CPU time of the workers), cells and cells/s. Goal (issue 16):
under 3 min on one H100-class GPU with 16 cores (the paper: 20-40 min per resection WSI on
a T4).

Weights: random by default (no weights can be downloaded), so the timings of the network
are the real ones but the cells are not: a random model finds few nuclei, which makes the
CPU side (post-processing, stitching, writing) lighter than on a real slide. With a real
checkpoint (``--checkpoint histoplus_cellvit_segmentor_40x.pt`` or one of ours) the cells
are real too. Without a GPU the script stops and says so; ``--smoke`` runs the same code on
the CPU with a tiny model on a small slide, to check the script itself.

    .venv/bin/python benchmarks/gpu_predict.py [--batch 16] [--workers 15] [--checkpoint C]
    .venv/bin/python benchmarks/gpu_predict.py --smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def model_only(checkpoint: Path, device: str, batch: int, px: int, iters: int) -> str:
    """Windows/s of the forward pass alone (uint8 windows already on the device)."""
    from histocurate.predict.engine import Engine
    from histocurate.predict.models import load_model
    from histocurate.predict.worker import InlineExecutor

    loaded = load_model(checkpoint, device)
    engine = Engine(loaded, executor=InlineExecutor(), batch_size=batch, precision="auto")
    images = [torch.randint(0, 256, (px, px, 3), dtype=torch.uint8).numpy()] * batch
    cuda = loaded.device.type == "cuda"
    for _ in range(2):
        engine.forward(images)  # warm-up: cuDNN heuristics, the allocator
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        engine.forward(images)  # includes the maps' copy back to the host (float16)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return (f"model only: {batch * iters / seconds:.1f} windows/s of {px} px "
            f"({batch * iters * px * px / seconds / 1e6:.0f} Mpx/s), batch {batch}, "
            f"peak GPU memory {peak:.1f} GiB")  # fmt: skip


def make_checkpoint(path: Path, *, smoke: bool) -> Path:
    from histocurate.cellvit.checkpoint import save_checkpoint
    from histocurate.cellvit.model import CellViTConfig, build_model
    from histocurate.labels import LABELS
    from histocurate.testing.predict_data import tiny_checkpoint

    if smoke:
        return tiny_checkpoint(path)
    torch.manual_seed(0)
    model = build_model(CellViTConfig(encoder="h0-mini", n_types=13, tile_size=448))
    return save_checkpoint(path, model, classes=list(LABELS), mpp=0.25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=100_000)
    parser.add_argument("--height", type=int, default=80_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--read-threads", type=int, default=8)
    parser.add_argument("--window-um", type=float, default=196.0, help="784 px at 0.25")
    parser.add_argument("--checkpoint", type=Path, help="real weights (default: random)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/histocurate-gpu-predict"))
    parser.add_argument("--iters", type=int, default=10, help="timed model-only batches")
    parser.add_argument("--smoke", action="store_true", help="tiny model, small slide, CPU")
    args = parser.parse_args()
    if args.smoke:
        args.width = args.height = 4096
        args.batch, args.iters, args.workers = 4, 1, min(args.workers, 2)
        device, precision = "cpu", "fp32"
    else:
        if not torch.cuda.is_available():
            built = torch.version.cuda
            print(f"gpu_predict.py needs a CUDA GPU: torch {torch.__version__} "
                  f"({'CUDA ' + built if built else 'no CUDA build'}) sees none here. Run it on "
                  "a GPU machine, or with --smoke to check the script on the CPU.",
                  file=sys.stderr)  # fmt: skip
            return 2
        device, precision = "cuda", "bf16"
        print(f"GPU: {torch.cuda.get_device_name(0)}; {os.cpu_count()} CPUs")

    from histocurate.cli.app import main as cli
    from histocurate.config import load_config
    from histocurate.predict.stage import run_predict
    from histocurate.synth import write_benchmark_slide
    from histocurate.tiling import run_tile

    cache = args.cache / ("smoke" if args.smoke else "full")
    slide = cache / f"benchmark_{args.width}x{args.height}.tiff"
    if not slide.exists():
        start = time.perf_counter()
        cache.mkdir(parents=True, exist_ok=True)
        write_benchmark_slide(slide, width_px=args.width, height_px=args.height, seed=0)
        print(f"wrote {slide} ({slide.stat().st_size / 2**30:.1f} GiB) in "
              f"{time.perf_counter() - start:.0f} s (not timed)")  # fmt: skip
    ws = cache / "ws"
    if not (ws / "histocurate.toml").exists():
        assert cli(["init", str(ws)]) == 0
        (ws / "slides.csv").write_text(f"slide_id,path,indication\nbench,{slide},LUAD\n")
    overrides = {"predict": {"device": device, "precision": precision, "batch_size": args.batch,
                             "workers": args.workers, "read_threads": args.read_threads,
                             "window_um": args.window_um}}  # fmt: skip
    config = load_config(ws, overrides)
    start = time.perf_counter()
    tiling = run_tile(config)
    print(f"tiling: {int(tiling.total())} tissue tiles in {time.perf_counter() - start:.1f} s "
          f"({tiling.status_line('slides')})")  # fmt: skip
    checkpoint = args.checkpoint or make_checkpoint(cache / "model.pt", smoke=args.smoke)
    px = round(args.window_um / 0.25 / 14) * 14
    print(model_only(checkpoint, device, args.batch, px, args.iters))
    start = time.perf_counter()
    run = run_predict(config, checkpoint=checkpoint, force=True)
    wall = time.perf_counter() - start
    (outcome,) = run.outcomes
    if outcome.status != "done":
        print(f"prediction failed: {outcome.error}", file=sys.stderr)
        return 1
    e = outcome.extra
    print(f"end to end: {wall:.1f} s for {e['windows']} windows ({e['windows'] / wall:.1f}/s), "
          f"{outcome.count:,} cells ({outcome.count / wall:,.0f}/s), "
          f"{e['blank']} windows off tissue skipped")  # fmt: skip
    parts = [("waiting for reads", e["read_wait"]), ("forward (GPU)", e["forward"]),
             ("waiting for post-processing", e["post_wait"]), ("stitching", e["stitch"]),
             ("writing outputs", e["write"])]  # fmt: skip
    rest = wall - sum(v for _, v in parts)
    for name, seconds in [*parts, ("planning, model load, other", rest)]:
        print(f"  {name:30} {seconds:8.1f} s  {seconds / wall:6.1%}")
    print(f"  post-processing CPU in {args.workers} workers: {e['post_cpu']:.1f} s "
          f"({e['post_cpu'] / max(e['windows'], 1) * 1e3:.0f} ms per window); found "
          f"{e['found']:,}, cut {e['cut']:,}, duplicates {e['duplicates']:,}")  # fmt: skip
    if not args.smoke:
        weights = "random weights" if args.checkpoint is None else f"weights {args.checkpoint}"
        verdict = "met" if wall < 180 else "NOT met"
        print(f"goal < 180 s on an H100-class GPU: {verdict} ({wall:.0f} s, {weights})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
