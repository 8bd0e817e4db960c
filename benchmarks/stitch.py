"""Stitching benchmark: one slide's windows holding about 1 M nuclei, stitched.

Nuclei are discs (radius 5-9 px, 16-vertex outlines) on a jittered grid at 0.25 um/px over
a square of tissue tiles; the windows are the stage's (784 px, 64 px margins: 656 px
cores). Each window reports the nuclei its read box meets, cut by the box where it crosses
it and moved by up to 0.3 px (another segmentation in each window:
`histocurate.testing.predict_data.window_views`). Printed: the windows' nuclei, the stitch time
and its peak memory above its inputs, and the check that every true nucleus came out once
(matched at IoU > 0.5). Target (issue 16): 1 M cells in under 60 s.

    .venv/bin/python benchmarks/stitch.py [--cells 1000000] [--jitter 0.3]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import numpy as np
import shapely


def rss_mib(field: str = "VmRSS") -> float:
    """Resident memory of this process (VmHWM: its peak since the last reset), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--spacing", type=float, default=24.0, help="grid step, px")
    parser.add_argument("--jitter", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from histocurate.predict.stitch import stitch
    from histocurate.predict.windows import plan_resolution, plan_windows, window_geometry
    from histocurate.testing.predict_data import disc_cells, full_tiles, window_views

    side = math.ceil(math.sqrt(args.cells) * args.spacing / 448) * 448
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    grid_1d = np.arange(args.spacing / 2, side, args.spacing)
    xs, ys = np.meshgrid(grid_1d, grid_1d)
    xy = np.stack([xs.ravel(), ys.ravel()], axis=1)[: args.cells]
    xy = xy + rng.uniform(-2.5, 2.5, xy.shape)
    cells = disc_cells(xy, rng.uniform(5, 9, len(xy)))
    tiles = full_tiles("bench", side, side, 448)
    geometry = window_geometry(window_um=196, margin_um=16, mpp=0.25, patch=14)
    grid = plan_windows(tiles, geometry, plan_resolution(0.25, 0.25, slide="bench",
                        checkpoint="bench"), slide_id="bench")  # fmt: skip
    views = window_views(grid, cells, jitter=args.jitter, seed=args.seed + 1)
    found = sum(len(v) for v in views)
    made = time.perf_counter() - start
    print(f"slide {side} x {side} px at 0.25 um/px, {len(tiles)} tissue tiles, "
          f"{len(grid.windows)} windows of {geometry.window_px} px "
          f"({geometry.margin_px} px margins)")  # fmt: skip
    print(f"{len(cells):,} true nuclei; the windows report {found:,} "
          f"({found / len(cells):.2f} per nucleus); made in {made:.1f} s "
          "(not timed below)")  # fmt: skip
    before = rss_mib()
    reset_peak()
    start = time.perf_counter()
    out = stitch(grid, views, tiles, n_classes=3)
    seconds = time.perf_counter() - start
    peak = rss_mib("VmHWM")
    print(f"stitch: {seconds:.1f} s for {found:,} window nuclei -> {len(out):,} kept "
          f"({found / seconds:,.0f} window nuclei/s)")  # fmt: skip
    print(f"  dropped: {out.cut:,} cut, {out.duplicates:,} duplicates, {out.off_tissue:,} off "
          f"tissue; kept as pieces: {out.partial:,}")  # fmt: skip
    print(f"  memory: {before:,.0f} MiB before (inputs), peak {peak:,.0f} MiB during "
          f"(+{peak - before:,.0f} MiB)")  # fmt: skip
    start = time.perf_counter()
    got = shapely.from_wkb(out.wkb)
    a, b = shapely.STRtree(got).query(cells, predicate="intersects")
    inter = shapely.area(shapely.intersection(cells[a], got[b]))
    ok = inter / shapely.area(shapely.union(cells[a], got[b])) > 0.5
    per_true = np.bincount(a[ok], minlength=len(cells))
    per_out = np.bincount(b[ok], minlength=len(got))
    print(f"check ({time.perf_counter() - start:.1f} s): {int((per_true == 0).sum())} true nuclei "
          f"lost, {int((per_true > 1).sum())} found twice, {int((per_out == 0).sum())} outputs "
          f"matching no true nucleus")  # fmt: skip
    target = "met" if seconds < 60 else "NOT met"
    print(f"target < 60 s for {args.cells:,} cells: {target}")


if __name__ == "__main__":
    main()
