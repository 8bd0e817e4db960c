"""Embedding speed on CPU: the pipeline (DataLoader workers, batches) vs a naive loop.

For `builtin` and for a ViT-B/16 with random weights (Phikon's architecture), measures
tiles/s of `embed_tile_table` (batched, worker processes reading tiles) and of a naive loop
(read one tile, encode it, next: no workers, batch 1) on the same tiles, in the same run,
plus the peak memory of each (every measurement runs in its own process, so the peak is
its own: main process + loader workers).

    python benchmarks/embed.py [--tiles 96] [--vit-tiles 32] [--workers 2] [--batch 32]

Tiles come from one synthetic slide (4096 px, 0.25 um/px, 448 px tiles, read through
OpenSlide as in production), made once in --workspace.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_tiles(workspace: Path) -> Path:
    """One synthetic slide, tiled; returns the workspace (reused when already there)."""
    from histocurate.cli.app import main
    from histocurate.synth import generate_cohort, write_manifest

    workspace = workspace.resolve()
    if not (workspace / "histocurate.toml").exists():
        assert main(["init", str(workspace)]) == 0
    slides = generate_cohort(
        workspace / "synthetic",
        indications=["LUAD", "COAD"],
        slides_per_indication=1,
        width_px=4096,
        height_px=4096,
    )
    write_manifest(slides, workspace / "slides.csv")
    assert main(["tile", "-w", str(workspace), "--no-prefect"]) == 0
    return workspace


def _peak_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest child (a loader worker), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, children / 1024  # ru_maxrss is in KiB on Linux


def measure(
    workspace: Path, encoder_name: str, mode: str, n: int, workers: int, batch: int
) -> dict:
    """One measurement (run in a fresh process by `main`)."""
    import tempfile

    import torch

    from data_schema import TILES
    from histocurate.features import embed_tile_table, get_encoder
    from histocurate.io import read_table
    from histocurate.slides import read_tile

    torch.set_num_threads(max(1, torch.get_num_threads()))
    import pandas as pd

    tiles = read_table(workspace / "tiles.parquet", TILES)
    repeats = -(-n // len(tiles))  # a small slide: visit its tiles again (new ids)
    copies = [tiles.assign(tile_id=tiles.tile_id + f"_r{r}") for r in range(repeats)]
    tiles = pd.concat(copies, ignore_index=True).iloc[:n].reset_index(drop=True)
    random = encoder_name != "builtin"
    encoder = get_encoder(encoder_name, random_weights=random, device="cpu")
    start = time.perf_counter()
    if mode == "naive":
        for row in tiles.to_dict("records"):
            encoder.embed_tiles([read_tile(row)])
    else:
        with tempfile.TemporaryDirectory() as out:
            outcomes = embed_tile_table(
                tiles, encoder, Path(out), batch_size=batch, num_workers=workers
            )
            assert all(o.status == "done" for o in outcomes), outcomes
    seconds = time.perf_counter() - start
    return {"encoder": encoder_name, "mode": mode, "tiles": len(tiles), "seconds": seconds,
            "tiles_per_s": len(tiles) / seconds, "peak_mb": _peak_mb()[0],
            "worker_peak_mb": _peak_mb()[1]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/histocurate-embed-bench"))
    parser.add_argument("--tiles", type=int, default=300, help="tiles for builtin")
    parser.add_argument("--vit-tiles", type=int, default=16, help="tiles for the ViT-B/16")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if args.one:
        encoder, mode, n = args.one.split(",")
        result = measure(args.workspace, encoder, mode, int(n), args.workers, args.batch)
        print("RESULT " + json.dumps(result))
        return 0

    workspace = make_tiles(args.workspace)
    runs = [("builtin", args.tiles), ("phikon", args.vit_tiles)]
    results = []
    for encoder, n in runs:
        for mode in ("naive", "pipeline"):
            cmd = [sys.executable, __file__, "--workspace", str(workspace), "--workers",
                   str(args.workers), "--batch", str(args.batch),
                   "--one", f"{encoder},{mode},{n}"]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            results.append(json.loads(line.removeprefix("RESULT ")))
            print(f"  {encoder:8s} {mode:8s} done", file=sys.stderr)
    import os

    print(f"\nCPU embedding, {os.cpu_count()} cores, {args.workers} loader workers, "
          f"batch {args.batch}; phikon = ViT-B/16 with random weights (fp32); "
          "importing torch alone peaks at ~690 MB here; load average "
          f"{os.getloadavg()[0]:.1f} (other processes share these cores)\n")  # fmt: skip
    print("| encoder | mode | tiles | seconds | tiles/s | speed-up | peak RSS main / worker (MB) |")
    print("|---|---|---|---|---|---|---|")
    naive = {r["encoder"]: r["tiles_per_s"] for r in results if r["mode"] == "naive"}
    for r in results:
        print(f"| {r['encoder']} | {r['mode']} | {r['tiles']} | {r['seconds']:.1f} | "
              f"{r['tiles_per_s']:.1f} | {r['tiles_per_s'] / naive[r['encoder']]:.2f}x | "
              f"{r['peak_mb']:.0f} / {r['worker_peak_mb']:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
