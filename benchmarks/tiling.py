"""Tiling benchmark: `read_tile` vs raw `OpenSlide.read_region`, and tissue detection time.

    python benchmarks/tiling.py                       # 100k x 80k synthetic slide (made once)
    python benchmarks/tiling.py --slide my.svs        # any slide

Targets (issue 2): read_tile within 10% of raw read_region on the same tiles; tissue
detection under 5 s for a 100,000 x 80,000 px slide. Prints a table of measured numbers.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
from rich.console import Console
from rich.table import Table

from histocurate.config import TilingConfig
from histocurate.slides import read_tile
from histocurate.tiling.slide import read_thumbnail, tile_slide
from histocurate.tiling.tissue import tissue_mask


def benchmark_slide(cache: Path, width: int, height: int) -> Path:
    from histocurate.synth import write_benchmark_slide

    path = cache / f"benchmark_{width}x{height}.tiff"
    if not path.exists():
        start = time.perf_counter()
        write_benchmark_slide(path, width_px=width, height_px=height, seed=0)
        print(f"generated {path} in {time.perf_counter() - start:.1f} s")
    return path


def time_reads(path: Path, tiles: list[dict], repeats: int) -> tuple[float, float]:
    """Seconds per tile for raw read_region and for read_tile, alternating, best of repeats."""
    slide = openslide.OpenSlide(str(path))
    raw_times, tile_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tiles:
            slide.read_region((t["x"], t["y"]), t["read_level"], (t["read_size"],) * 2)
        raw_times.append((time.perf_counter() - start) / len(tiles))
        start = time.perf_counter()
        for t in tiles:
            read_tile(t)
        tile_times.append((time.perf_counter() - start) / len(tiles))
    return min(raw_times), min(tile_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slide", type=Path, help="slide to use (default: a synthetic one)")
    parser.add_argument("--width", type=int, default=100_000)
    parser.add_argument("--height", type=int, default=80_000)
    parser.add_argument("--tiles", type=int, default=400, help="tiles to read per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "histocurate-bench"
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.slide or benchmark_slide(args.cache, args.width, args.height)
    slide = openslide.OpenSlide(str(path))
    mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    config = TilingConfig()  # type: ignore[call-arg]

    start = time.perf_counter()
    thumb = read_thumbnail(slide, mpp=mpp, thumbnail_mpp=config.thumbnail_mpp)
    t_thumb = time.perf_counter() - start
    start = time.perf_counter()
    mask = tissue_mask(thumb, mpp=mpp * slide.dimensions[0] / thumb.shape[1])
    t_mask = time.perf_counter() - start
    row = {"slide_id": "bench", "path": str(path), "indication": "LUAD", "cohort": "bench",
           "mpp_override": None}  # fmt: skip
    start = time.perf_counter()
    tiles, _ = tile_slide(row, config)
    t_stage = time.perf_counter() - start

    rng = np.random.default_rng(0)
    chosen = tiles.iloc[rng.permutation(len(tiles))[: args.tiles]].to_dict(orient="records")
    time_reads(path, chosen[:20], 1)  # warm the OS cache and the handle cache
    raw, ours = time_reads(path, chosen, args.repeats)

    table = Table(
        title=f"tiling benchmark: {path.name} ({slide.dimensions[0]} x {slide.dimensions[1]} px)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("thumbnail read (s)", f"{t_thumb:.2f}", "")
    table.add_row("tissue mask (s)", f"{t_mask:.2f}", "")
    table.add_row("tissue detection = thumbnail + mask (s)", f"{t_thumb + t_mask:.2f}", "< 5")
    table.add_row("whole tile_slide, grid included (s)", f"{t_stage:.2f}", "")
    table.add_row("tiles on tissue", f"{len(tiles)}", "")
    table.add_row("tissue fraction of thumbnail", f"{mask.mean():.2f}", "")
    table.add_row("raw read_region (tiles/s)", f"{1 / raw:.0f}", "")
    table.add_row("read_tile (tiles/s)", f"{1 / ours:.0f}", "")
    table.add_row("read_tile / read_region time ratio", f"{ours / raw:.3f}", "<= 1.10")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table.add_row("peak RSS (MiB)", f"{peak:.0f}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
