"""Stitching: every nucleus once, none lost, whatever the windows' borders do to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from histocurate.predict.stitch import Stitched, stitch, suppress, tile_lookup
from histocurate.predict.windows import WindowGrid, plan_resolution, plan_windows, window_geometry
from histocurate.testing.predict_data import disc_cells, full_tiles, window_views

CORE, MARGIN = 160, 32  # 224 px windows at 0.25 um/px: window_um 56, margin_um 8


def grid_over(tiles: pd.DataFrame) -> WindowGrid:
    geometry = window_geometry(window_um=56, margin_um=8, mpp=0.25, patch=14)
    res = plan_resolution(0.25, 0.25, slide="s", checkpoint="m")
    return plan_windows(tiles, geometry, res, slide_id="s")


def place(special: list[tuple[float, float, float]], width: float, height: float, seed: int):
    """The special nuclei (x, y, r) plus random ones that overlap none (gap >= 2 px)."""
    rng = np.random.default_rng(seed)
    cells = list(special)
    for _ in range(4000):
        r = rng.uniform(5, 9)  # centres at least a radius inside the tissue
        x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
        if all(np.hypot(x - a, y - b) > r + c + 2 for a, b, c in cells):
            cells.append((x, y, r))
    arr = np.array(cells)
    return disc_cells(arr[:, :2], arr[:, 2]), arr


def matches(truth: np.ndarray, out: Stitched) -> tuple[np.ndarray, np.ndarray]:
    """For each true outline, the outputs with IoU > 0.5; for each output, its true ones."""
    got = shapely.from_wkb(out.wkb)
    a, b = shapely.STRtree(got).query(truth, predicate="intersects")
    inter = shapely.area(shapely.intersection(truth[a], got[b]))
    iou = inter / shapely.area(shapely.union(truth[a], got[b]))
    ok = iou > 0.5
    return np.bincount(a[ok], minlength=len(truth)), np.bincount(b[ok], minlength=len(got))


def test_nuclei_on_window_borders_come_out_once() -> None:
    width, height = 896, 672
    tiles = full_tiles("s", width, height, 224)
    grid = grid_over(tiles)
    special: list[tuple[float, float, float]] = []
    for k in (1, 2, 3, 4):  # on core borders, on read-box edges on both sides, on corners
        c = float(k * CORE)
        special += [(c, 80.0, 7.0), (c - MARGIN, 250.0, 7.0), (c + MARGIN, 420.0, 7.0)]
        special += [(c, float(CORE * (k % 3 + 1)), 8.0)]
    special += [(5.0, 600.0, 8.0), (890.0, 300.0, 6.0)]  # at the outer edges of the tissue
    special += [(2 * CORE - 5.0, 560.0, 40.0)]  # wider than 2 x margin: cut in every window
    truth, placed = place(special, width, height, seed=1)
    views = window_views(grid, truth, jitter=0.3, seed=2)
    out = stitch(grid, views, tiles, n_classes=3)
    per_truth, per_output = matches(truth, out)
    assert per_truth.min() == 1 and per_truth.max() == 1  # none lost, none twice
    assert per_output.max() == 1 and per_output.min() == 1  # no output made up
    assert len(out) == len(truth) and out.partial == 1  # the wide one, kept once, as a piece
    assert out.duplicates > 0 and out.cut > 0  # the borders did something to resolve
    # each kept nucleus is the owner's version unless that one was cut
    assert (grid.owner(out.x, out.y) == out.window).mean() > 0.95
    big = np.argmax(placed[:, 2])
    assert abs(out.x - placed[big, 0]).min() < 5


def test_a_cut_at_the_end_of_the_tissue_is_kept() -> None:
    tiles = full_tiles("s", 448, 448, 224)  # cores 0..480: the last reads up to x = 512
    grid = grid_over(tiles)
    truth = disc_cells(np.array([[445.0, 240.0]]), np.array([70.0]))  # reaches x = 515
    views = window_views(grid, truth, jitter=0.0)
    out = stitch(grid, views, tiles, n_classes=3)
    assert len(out) == 1 and out.partial == 0 and out.cut == 2  # the pieces left and above
    assert out.window[0] == 1 * grid.n_cols + 2 and out.tile_id[0] == "s_x224_y224"


def test_nuclei_off_the_tissue_tiles_are_dropped_and_tiles_named() -> None:
    tiles = full_tiles("s", 448, 224, 224)
    grid = grid_over(tiles)
    truth = disc_cells(np.array([[100.0, 100.0], [300.0, 100.0], [300.0, 260.0]]),
                       np.array([6.0, 6.0, 6.0]))  # fmt: skip
    out = stitch(grid, window_views(grid, truth, jitter=0.0), tiles, n_classes=3)
    assert out.tile_id.tolist() == ["s_x0_y0", "s_x224_y0"] and out.off_tissue == 1


def test_no_window_no_cell() -> None:
    tiles = full_tiles("s", 224, 224, 224)
    out = stitch(grid_over(tiles), [], tiles, n_classes=3)
    assert len(out) == 0 and out.found == 0


def test_suppression_keeps_the_best_of_each_chain() -> None:
    # 0-1-2-3 a chain of conflicts, 4 alone: 3 outranks 2, 1 outranks 0 and 2
    rank = np.array([1, 4, 2, 5, 3])
    kept = suppress(rank, np.array([0, 1, 2]), np.array([1, 2, 3]))
    assert kept.tolist() == [False, True, False, True, True]


def test_tile_lookup_on_a_tile_grid() -> None:
    tiles = pd.DataFrame({"tile_id": ["a", "b"], "x": [0, 448], "y": [448, 448],
                          "size_level0": [448, 448]})  # fmt: skip
    found = tile_lookup(tiles, np.array([10.0, 500.0, 500.0, -3.0]), np.array([450.0] * 3 + [1]))
    assert found.tolist() == ["a", "b", "b", None]
