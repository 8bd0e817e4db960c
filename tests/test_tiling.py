"""Tissue detection, tile geometry and the tile stage on real and generated slides."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest

from histocurate.config import HistocurateConfig, load_config
from histocurate.errors import SlideError
from histocurate.io import read_provenance
from histocurate.runs import ItemOutcome, ItemWork
from histocurate.slides import read_tile, slide_info
from histocurate.tiling import (
    grid_positions,
    tile_geometry,
    tile_item,
    tile_slide,
    tissue_fractions,
)
from histocurate.tiling.stage import slide_id_of
from histocurate.tiling.tissue import tissue_mask
from tests.slide_files import tissue_image, write_slide


@pytest.mark.parametrize(
    ("mpp", "target", "downsamples", "expected"),
    [
        (0.25, None, (1.0, 4.0, 16.0), (448, 448, 0, 448)),  # 40x: native
        (0.499, None, (1.0,), (224, 224, 0, 224)),  # 20x (the CMU slide): native
        (0.25, 0.5, (1.0, 2.0, 4.0), (448, 224, 1, 224)),  # 40x read at 20x from level 1
        (0.25, 0.5, (1.0, 4.0), (448, 224, 0, 448)),  # no 20x level: read 40x and resize
        (0.2265, None, (1.0, 4.0), (494, 448, 0, 494)),  # odd scanner mpp: resize to 0.25
    ],
)
def test_tile_geometry(mpp, target, downsamples, expected) -> None:
    g = tile_geometry(mpp=mpp, tile_size_um=112, level_downsamples=downsamples, target_mpp=target)
    assert (g.size_level0, g.tile_px, g.read_level, g.read_size) == expected
    assert g.tile_mpp == pytest.approx(mpp * g.size_level0 / g.tile_px)
    assert g.resized == (g.read_size != g.tile_px)


def test_grid_positions_cover_only_full_tiles() -> None:
    xs, ys = grid_positions(1000, 500, 224)
    assert sorted(set(xs.tolist())) == [0, 224, 448, 672]
    assert sorted(set(ys.tolist())) == [0, 224]
    assert grid_positions(100, 500, 224)[0].size == 0


def test_tissue_fractions_exact_on_aligned_mask() -> None:
    mask = np.zeros((20, 20), bool)
    mask[:10, :5] = True  # left half of the top-left 10 x 10 mask block
    x, y = np.array([0, 100, 0]), np.array([0, 0, 100])
    fractions = tissue_fractions(mask, scale_x=0.1, scale_y=0.1, x=x, y=y, size=100)
    assert fractions.tolist() == [0.5, 0.0, 0.0]


def test_tissue_mask_on_real_he_keeps_tissue_and_drops_glass(shared_data: Path) -> None:
    slide = openslide.OpenSlide(str(shared_data / "cmu_small_region.svs"))
    rgb = np.asarray(slide.get_thumbnail((140, 190)).convert("RGB"))
    scale = slide.dimensions[0] / rgb.shape[1]
    mask = tissue_mask(rgb, mpp=0.499 * scale)
    grey = rgb.mean(axis=-1)
    # Glass is bright and grey: almost none of it in the mask; tissue: most of it is.
    assert mask[grey > 225].mean() < 0.1
    stained = (rgb.max(-1).astype(int) - rgb.min(-1)) > 40
    assert mask[stained].mean() > 0.9
    assert 0.1 < mask.mean() < 0.7


def test_cmu_slide_tiles_at_20x_where_the_tissue_is(shared_data: Path, tmp_path: Path) -> None:
    row = {"slide_id": "cmu", "path": str(shared_data / "cmu_small_region.svs"),
           "indication": "LUAD", "cohort": "cmu", "mpp_override": None}  # fmt: skip
    cfg = load_config(tmp_path, environ={}, require_file=False)
    tiles, _ = tile_slide(row, cfg.tiling)
    assert len(tiles) > 20
    assert set(tiles["tile_px"]) == {224} and set(tiles["size_level0"]) == {224}
    assert not tiles["resized"].any() and set(tiles["mpp"]) == {0.499}
    assert (tiles["tissue_fraction"] >= 0.5).all()
    # Kept tiles hold stained tissue, tiles of the grid that were dropped are mostly glass.
    kept = [read_tile(t) for t in tiles.head(8).to_dict(orient="records")]
    assert all(t.shape == (224, 224, 3) and t.dtype == np.uint8 for t in kept)
    assert np.mean([np.mean(t.max(-1).astype(int) - t.min(-1)) for t in kept]) > 30
    glass = {
        "slide_path": row["path"],
        "x": 0,
        "y": 0,
        "read_level": 0,
        "read_size": 224,
        "tile_px": 224,
    }
    assert read_tile(glass).mean() > 200
    assert tiles["tile_id"].is_unique and tiles["tile_id"].iloc[0].startswith("cmu_x")


def test_read_tile_equals_read_region_and_resizes_when_needed(tmp_path: Path) -> None:
    rgb = tissue_image(1024, 1024, seed=3)
    path = write_slide(tmp_path / "s.tiff", rgb, mpp=0.25)
    slide = openslide.OpenSlide(str(path))
    tile = {
        "slide_path": str(path),
        "x": 256,
        "y": 512,
        "read_level": 0,
        "read_size": 448,
        "tile_px": 448,
    }
    expected = np.asarray(slide.read_region((256, 512), 0, (448, 448)))[..., :3]
    assert np.array_equal(read_tile(tile), expected)
    resized = read_tile({**tile, "tile_px": 224})
    assert resized.shape == (224, 224, 3)
    assert np.abs(resized.astype(int) - expected[::2, ::2].astype(int)).mean() < 12
    outside = read_tile({**tile, "x": 900, "y": 900})  # partly beyond the slide: white glass
    assert (outside[-50:, -50:] == 255).all()


def tile_one_slide(row: dict, cfg: HistocurateConfig, *, force: bool = False) -> ItemOutcome:
    """One slide through the stage's item work, as `run_tile` runs it."""
    return ItemWork(partial(tile_item, config=cfg, force=force), slide_id_of, "tile")(row)


def test_stage_is_resumable_and_force_redoes(tmp_path: Path) -> None:
    path = write_slide(tmp_path / "s.tiff", tissue_image(2048, 2048), mpp=0.25)
    cfg = load_config(tmp_path, environ={}, require_file=False)
    row = {
        "slide_id": "s",
        "path": str(path),
        "indication": "LUAD",
        "cohort": "c",
        "mpp_override": None,
    }
    first = tile_one_slide(row, cfg)
    assert first.status == "done" and first.count == 4  # the middle 1024 px of tissue
    assert (tmp_path / "reports" / "tile" / "s.png").is_file()
    assert tile_one_slide(row, cfg).status == "skipped"
    assert tile_one_slide(row, cfg, force=True).status == "done"


def test_a_replaced_slide_or_new_settings_retile_only_that_slide(tmp_path: Path) -> None:
    path = write_slide(tmp_path / "s.tiff", tissue_image(2048, 2048), mpp=0.25)
    cfg = load_config(tmp_path, environ={}, require_file=False)
    row = {"slide_id": "s", "path": str(path), "indication": "LUAD", "cohort": "c",
           "mpp_override": None}  # fmt: skip
    assert tile_one_slide(row, cfg).count == 4
    # re-scanned under the same id: tissue over the whole slide now
    rescan = tissue_image(2048, 2048)
    rescan[:, :] = rescan[1024, 1024]
    write_slide(path, rescan, mpp=0.25)
    again = tile_one_slide(row, cfg)
    assert again.status == "done" and again.count == 16
    assert tile_one_slide(row, cfg).status == "skipped"
    # another tile size: retiled; the manifest's indication changed: retiled
    bigger = load_config(tmp_path, {"tiling": {"tile_size_um": 224}}, environ={},
                         require_file=False)  # fmt: skip
    assert tile_one_slide(row, bigger).count == 4
    assert tile_one_slide({**row, "indication": "LUSC"}, bigger).status == "done"
    # the same file elsewhere (another mount, a copied workspace): not retiled, its tiles
    # point at the new path, their provenance (what features are checked against) is kept
    tiles_file = tmp_path / "tiles.parquet" / "s.parquet"
    before = read_provenance(tiles_file)
    moved = tmp_path / "elsewhere" / "s.tiff"
    moved.parent.mkdir()
    path.rename(moved)
    row = {**row, "path": str(moved), "indication": "LUSC"}
    assert tile_one_slide(row, bigger).status == "skipped"
    assert set(pd.read_parquet(tiles_file)["slide_path"]) == {str(moved)}
    assert read_provenance(tiles_file) == before
    assert read_tile(pd.read_parquet(tiles_file).iloc[0]).shape == (896, 896, 3)
    path = moved
    # the slide file gone: its tiles are kept, nothing fails
    path.unlink()
    kept = tile_one_slide(row, bigger)
    assert kept.status == "skipped"
    assert (tmp_path / "tiles.parquet" / "s.parquet").is_file()


EXPECTED_ERRORS = {
    "missing": "not found",
    "text": "not a slide format",
    "truncated": "damaged|truncated|cannot read",
    "no_mpp": "no resolution.*manifest",
    "too_small": "smaller than one tile",
}


@pytest.mark.parametrize("kind", list(EXPECTED_ERRORS))
def test_bad_slides_fail_alone_with_a_message_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.svs"
    if kind == "text":
        path.write_text("this is not a slide")
    elif kind == "truncated":
        good = write_slide(tmp_path / "good.tiff", tissue_image(2048, 2048))
        path = tmp_path / "bad.tiff"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind == "no_mpp":
        path = write_slide(tmp_path / "bad.tiff", tissue_image(1024, 1024), mpp=None)
    elif kind == "too_small":
        path = write_slide(tmp_path / "bad.tiff", tissue_image(400, 400), mpp=0.25, levels=1)
    row = {
        "slide_id": "bad",
        "path": str(path),
        "indication": "LUAD",
        "cohort": "c",
        "mpp_override": None,
    }
    cfg = load_config(tmp_path, environ={}, require_file=False)
    outcome = tile_one_slide(row, cfg)
    assert outcome.status == "failed" and outcome.input_error, outcome
    assert str(path) in (outcome.error or "")
    assert re.search(EXPECTED_ERRORS[kind], outcome.error or ""), outcome.error
    assert not (tmp_path / "tiles.parquet" / "bad.parquet").exists()


def test_mpp_override_rescues_a_slide_without_resolution(tmp_path: Path) -> None:
    path = write_slide(tmp_path / "s.tiff", tissue_image(1024, 1024), mpp=None)
    with pytest.raises(SlideError, match="no resolution"):
        slide_info(path)
    assert slide_info(path, mpp_override=0.5).mpp == 0.5
    cfg = load_config(tmp_path, environ={}, require_file=False)
    row = {
        "slide_id": "s",
        "path": str(path),
        "indication": "LUAD",
        "cohort": "c",
        "mpp_override": 0.5,
    }
    tiles, _ = tile_slide(row, cfg.tiling)
    assert set(tiles["tile_px"]) == {224} and set(tiles["mpp"]) == {0.5}
