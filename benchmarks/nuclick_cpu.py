"""NuClick on CPU: nuclei per second, batched vs one forward per nucleus, and peak memory.

(Named nuclick_cpu.py: a benchmarks/nuclick.py would shadow the `nuclick` package for
every script in this folder.)

Each mode runs in its own process (peak resident memory is per process). Random weights
(the network's speed does not depend on them).

Then post-processing alone (probability maps -> instance maps and polygons), before and
after the speed-up in the same run: the plain per-click reference (`nuclick.testing.reference`)
and the fast path (`nuclick.postprocess.from_probabilities`), in one process and over a
pool of ``--threads`` processes, on realistic probability maps (synthetic H&E tiles,
clicks at true centroids, maps made from the truth: see `benchmarks/gpu_nuclick.py`),
because random weights give noise masks that are far slower to post-process.

    python benchmarks/nuclick_cpu.py [--width 1.0] [--clicks 64] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _run(mode: str, width: float, clicks: int, batch: int, threads: int, queue: mp.Queue) -> None:
    import torch

    from nuclick.model import NuClick
    from nuclick.predict import PredictOptions, predict, predict_many

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = NuClick(width=width).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)
    points = rng.uniform(0, 448, (clicks, 2))
    predict(image, points[:2], model, batch_size=2)  # warm-up
    start = time.perf_counter()
    if mode == "batched":
        predict_many([image], [points], model, options=PredictOptions(batch_size=batch))
    else:
        for p in points:
            predict(image, p[None], model, batch_size=1)
    seconds = time.perf_counter() - start
    queue.put((mode, clicks / seconds, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--clicks", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-post", dest="post", action="store_false", help="skip post-processing")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for mode in ("batched", "one per nucleus"):
        queue: mp.Queue = ctx.Queue()
        proc = ctx.Process(
            target=_run, args=(mode, args.width, args.clicks, args.batch, args.threads, queue)
        )
        proc.start()
        rows.append(queue.get())
        proc.join()
    print(
        f"NuClick CPU, width {args.width}, {args.clicks} clicks on a 448 px tile, "
        f"batch {args.batch}, {args.threads} threads"
    )
    print(f"{'mode':<16} {'nuclei/s':>9} {'seconds':>8} {'peak RSS MiB':>13}")
    for mode, rate, seconds, rss in rows:
        print(f"{mode:<16} {rate:>9.2f} {seconds:>8.2f} {rss / 1024:>13.0f}")
    if args.post:
        from gpu_nuclick import postprocess_rows, realistic_tiles

        with tempfile.TemporaryDirectory() as tmp:
            tiles = realistic_tiles(Path(tmp), slides=1, size=1792)
        n = sum(len(t.points) for t in tiles)
        print(f"\nPost-processing only, realistic maps: {len(tiles)} tiles of 448 px, {n} clicks")
        print(f"{'path':<40} {'clicks/s':>9}")
        for key, value in postprocess_rows(tiles, args.threads):
            print(f"{key:<40} {value:>9}")


if __name__ == "__main__":
    main()
