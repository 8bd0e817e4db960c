"""Inference windows: resolution rules, window sizes, the grid over tissue tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from histocurate.dataset.maps import encode_rgb
from histocurate.dataset.store import DatasetVersion
from histocurate.errors import UserInputError
from histocurate.predict.dataset import dataset_items
from histocurate.predict.engine import Engine
from histocurate.predict.windows import (
    is_blank,
    plan_resolution,
    plan_windows,
    read_level,
    window_geometry,
)
from histocurate.predict.worker import InlineExecutor
from histocurate.testing.predict_data import full_tiles, oracle_loader


def test_resolution_same_close_finer_and_coarser() -> None:
    same = plan_resolution(0.25, 0.25, slide="s", checkpoint="m.pt")
    assert (same.scale, same.model_mpp, same.note) == (1.0, 0.25, None)
    close = plan_resolution(0.2265, 0.25, slide="s", checkpoint="m.pt")
    assert close.scale == 1.0 and close.model_mpp == 0.2265 and "within 20%" in (close.note or "")
    finer = plan_resolution(0.25, 0.5, slide="s", checkpoint="m.pt")
    assert finer.scale == 2.0 and finer.model_mpp == 0.5 and "resampled" in (finer.note or "")
    with pytest.raises(UserInputError, match=r"slide s: scanned at 0\.500 .* m\.pt; upsampling"):
        plan_resolution(0.5, 0.25, slide="s", checkpoint="m.pt")
    unknown = plan_resolution(0.5, None, slide="s", checkpoint="m.pt")
    assert unknown.scale == 1.0 and "records no mpp" in (unknown.note or "")


def test_window_sizes_round_to_the_patch() -> None:
    assert window_geometry(window_um=196, margin_um=16, mpp=0.5, patch=14).window_px == 392
    odd = window_geometry(window_um=200, margin_um=16, mpp=0.25, patch=16)
    assert odd.window_px % 16 == 0 and odd.window_px == 800
    with pytest.raises(UserInputError, match="leaves no core"):
        window_geometry(window_um=20, margin_um=16, mpp=0.25, patch=14)


def test_windows_cover_tissue_tiles_only_and_know_their_neighbours() -> None:
    geometry = window_geometry(window_um=56, margin_um=8, mpp=0.25, patch=14)  # 224 / 32
    assert geometry.core_px == 160
    res = plan_resolution(0.25, 0.25, slide="s", checkpoint="m")
    tiles = full_tiles("s", 896, 448, 224)
    tiles = tiles[~((tiles.x == 672) & (tiles.y == 0))]  # a hole: the top-right tile is glass
    grid = plan_windows(tiles, geometry, res, slide_id="s")
    cores = {(w.row, w.col) for w in grid.windows}
    # cores of 160 px over x in [0, 896), y in [0, 448); the hole's only core is (0, 5)
    assert (0, 5) not in cores and (1, 5) in cores and len(cores) == 3 * 6 - 1
    for w in grid.windows:
        x0, y0, x1, _ = w.core
        assert (x1 - x0, w.side0) == (160, 224) and (w.x0, w.y0) == (x0 - 32, y0 - 32)
        left, top, right, bottom = w.neighbours
        assert left == ((w.row, w.col - 1) in cores) and bottom == ((w.row + 1, w.col) in cores)
        assert top == ((w.row - 1, w.col) in cores) and right == ((w.row, w.col + 1) in cores)
        assert w.tiles  # every window's core meets a tissue tile
    # ownership: the core holding a point, on the half-open grid
    assert grid.owner(np.array([0.0, 159.9, 160.0]), np.array([0.0, 0.0, 0.0])).tolist() == [
        0,
        0,
        1,
    ]


def test_resampled_grid_in_level0_pixels() -> None:
    geometry = window_geometry(window_um=56, margin_um=8, mpp=0.5, patch=14)  # 112 / 16
    res = plan_resolution(0.25, 0.5, slide="s", checkpoint="m")
    grid = plan_windows(full_tiles("s", 448, 448, 448), geometry, res, slide_id="s")
    assert grid.core0 == 160.0 and grid.margin0 == 32.0
    assert {w.side0 for w in grid.windows} == {224}


def test_read_level_and_blank_windows() -> None:
    assert read_level((1.0, 3.9998, 16.0), 4.0) == 1
    glass = np.full((64, 64, 3), 240, np.uint8)
    assert is_blank(glass)
    tissue = glass.copy()
    tissue[10:20, 10:20] = (200, 120, 180)
    assert not is_blank(tissue)


def test_a_slide_without_tiles_gives_no_window() -> None:
    geometry = window_geometry(window_um=56, margin_um=8, mpp=0.25, patch=14)
    res = plan_resolution(0.25, 0.25, slide="s", checkpoint="m")
    empty = pd.DataFrame({"tile_id": [], "x": [], "y": [], "size_level0": []})
    assert plan_windows(empty, geometry, res, slide_id="s").windows == ()


def test_a_non_square_dataset_tile_resampled_maps_back_on_each_axis(tmp_path: Path) -> None:
    # 200 x 298 px at 0.0625 um/px for a 0.25 um/px model: read at 50 x 74 (74.5 rounded),
    # so x scales by 4 and y by 298 / 74; one scale for both put the bottom edge at 296
    rgb = np.full((298, 200, 3), 220, np.uint8)
    rr, cc = np.mgrid[0:298, 0:200]
    rgb[(cc + 0.5 - 100) ** 2 + (rr + 0.5 - 298) ** 2 <= 40**2] = (60, 30, 90)  # cut: bottom
    rgb[(cc + 0.5 - 60) ** 2 + (rr + 0.5 - 100) ** 2 <= 20**2] = (60, 30, 90)
    version = DatasetVersion("ds", "v1", tmp_path)
    image = encode_rgb(rgb, mpp=0.0625)
    pq.write_table(pa.table({"tile_id": ["t"], "mpp": [0.0625], "image": [image]}),
                   version.tiles)  # fmt: skip
    loaded = oracle_loader()(tmp_path / "oracle.pt")
    notes: list[str] = []
    ((key, padded, placement),) = list(dataset_items(version, loaded, notes))
    assert key == "t" and placement.crop == (74, 50) and padded.shape[:2] == (84, 56)
    assert placement.scale == (4.0, 298 / 74) and "resampled" in notes[0]
    engine = Engine(loaded, executor=InlineExecutor(), batch_size=1, mpp=0.25)
    (cells,) = engine.run(dataset_items(version, loaded, []))
    assert len(cells) == 2, cells.error
    cut = int(np.argmax(cells.y))
    assert cells.touch[cut].tolist() == [False, False, False, True]
    assert cells.bbox[cut].tolist() == pytest.approx([60.0, 257.73, 140.0, 298.0], abs=0.01)
    inner = 1 - cut
    assert abs(cells.x[inner] - 60) < 1.0 and abs(cells.y[inner] - 100) < 1.0
