"""The synthetic cohort: slides OpenSlide reads, truth that matches the pixels, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
import shapely
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from data_schema import TRUTH
from histocurate.io import read_partition, read_table
from histocurate.labels import LABELS, RARE_LABELS
from histocurate.synth import SyntheticSlide, generate_cohort, truth_in_tiles
from histocurate.synth.layout import build_slide
from histocurate.synth.render import stain_matrix
from histocurate.synth.tiff import level_sizes

DARK_H = 0.55  # haematoxylin concentration that only nuclei reach


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[SyntheticSlide]:
    out = tmp_path_factory.mktemp("synth")
    return generate_cohort(
        out, indications=["LUAD", "COAD"], slides_per_indication=1, width_px=1536,
        height_px=1536, seed=3,
    )  # fmt: skip


def haematoxylin(rgb: np.ndarray, record: SyntheticSlide) -> np.ndarray:
    """Haematoxylin concentration per pixel, by deconvolution with the slide's own stain."""
    model = build_slide(indication=record.indication, cohort=record.cohort, width=record.width,
                        height=record.height, mpp=record.mpp, seed=record.seed)  # fmt: skip
    od = -np.log((rgb.astype(np.float64) + 0.5) / 255.0) - model.stain.glass
    return (od.reshape(-1, 3) @ np.linalg.inv(stain_matrix(model.stain)))[:, 0].reshape(
        rgb.shape[:2]
    )


def polygon_mask(polygons: list[shapely.Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside any polygon (the renderer's rule)."""
    mask = np.zeros(shape, bool)
    for poly in polygons:
        xy = np.asarray(poly.exterior.coords)
        rr, cc = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=shape)
        mask[rr, cc] = True
    return mask


def test_openslide_reads_mpp_levels_and_size(cohort: list[SyntheticSlide]) -> None:
    for record in cohort:
        slide = openslide.OpenSlide(record.path)
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25)
        assert slide.dimensions == (1536, 1536)
        assert slide.level_count == len(level_sizes(1536, 1536, 512)) == 2
        assert slide.level_dimensions[1] == (384, 384)
        thumb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"))
        assert thumb.min() < 200 < thumb.max()  # tissue and glass both present


def test_truth_table_is_valid(cohort: list[SyntheticSlide]) -> None:
    truth = read_table(Path(cohort[0].truth_path).parent, TRUTH)
    assert set(truth["slide_id"]) == {r.slide_id for r in cohort}
    assert set(truth["label"]) <= set(LABELS)
    for record in cohort:
        rows = truth[truth["slide_id"] == record.slide_id]
        assert len(rows) == record.n_nuclei > 50
        assert rows["nucleus_id"].is_unique
        polys = shapely.from_wkb(rows["polygon"].to_numpy())
        assert shapely.is_valid(polys).all()
        assert (shapely.get_type_id(polys) == 3).all()  # Polygon
        centroids = shapely.get_coordinates(shapely.centroid(polys))
        np.testing.assert_allclose(centroids, rows[["x", "y"]].to_numpy(), atol=1e-6)
        assert (
            rows["x"].between(0, record.width).all() and rows["y"].between(0, record.height).all()
        )


def test_polygons_cover_dark_pixels(cohort: list[SyntheticSlide]) -> None:
    for record in cohort:
        slide = openslide.OpenSlide(record.path)
        rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        h = haematoxylin(rgb, record)
        truth = read_partition(Path(record.truth_path).parent, record.slide_id, TRUTH)
        polys = list(shapely.from_wkb(truth["polygon"].to_numpy()))
        inside = polygon_mask(polys, h.shape)
        near = ndimage.binary_dilation(inside, iterations=2)
        far = ~ndimage.binary_dilation(inside, iterations=4)
        dark = h > DARK_H
        assert dark.sum() > 1000
        assert (dark & ~near).sum() / dark.sum() < 0.02, "dark pixels outside every nucleus"
        assert (dark & far).sum() / far.sum() < 0.002, "background away from nuclei is dark"
        nuclear = polygon_mask(
            [p for p, lab in zip(polys, truth["label"], strict=True) if lab != "red_blood_cell"],
            h.shape,
        )
        core = ndimage.binary_erosion(nuclear, iterations=1)
        assert np.median(h[core]) > 0.45, "nuclear polygons are not dark inside"


def test_deterministic_for_a_seed(tmp_path: Path, cohort: list[SyntheticSlide]) -> None:
    again = generate_cohort(
        tmp_path, indications=["LUAD"], slides_per_indication=1, width_px=1536, height_px=1536,
        seed=3,
    )[0]  # fmt: skip
    first = cohort[0]
    assert again.slide_id == first.slide_id and again.seed == first.seed
    assert again.path.read_bytes() == first.path.read_bytes()
    a = read_partition(Path(first.truth_path).parent, first.slide_id, TRUTH)
    b = read_partition(Path(again.truth_path).parent, again.slide_id, TRUTH)
    pd.testing.assert_frame_equal(a, b)
    other = generate_cohort(
        tmp_path / "other", indications=["LUAD"], slides_per_indication=1, width_px=1536,
        height_px=1536, seed=4,
    )[0]  # fmt: skip
    assert other.path.read_bytes() != first.path.read_bytes()


def test_rerun_is_a_noop_and_cohorts_spread(tmp_path: Path) -> None:
    kwargs = {"indications": ["OV"], "slides_per_indication": 3, "width_px": 1024,
              "height_px": 1024}  # fmt: skip
    first = generate_cohort(tmp_path, **kwargs)
    stamps = [r.path.stat().st_mtime_ns for r in first]
    second = generate_cohort(tmp_path, **kwargs)
    assert [r.path.stat().st_mtime_ns for r in second] == stamps
    assert second == first
    assert len({r.cohort for r in first}) == 3


def _default_layouts() -> list:
    from histocurate.config import SynthConfig
    from histocurate.synth.cohort import cohort_of, slide_seed

    cfg = SynthConfig()
    return [
        build_slide(indication=ind, cohort=cohort_of(ind, i), width=cfg.width_px,
                    height=cfg.height_px, mpp=cfg.mpp, seed=slide_seed(cfg.seed, ind, i))
        for ind in cfg.indications
        for i in range(cfg.slides_per_indication)
    ]  # fmt: skip


def test_default_cohort_has_every_type_and_clustered_rare_types() -> None:
    layouts = _default_layouts()
    counts = pd.Series(np.concatenate([m.cells.label for m in layouts])).value_counts()
    assert set(counts.index) == set(range(len(LABELS)))  # all 13 types
    # rare types: few tiles hold one, and the richest tiles hold most of them
    tile = 448
    for rare in RARE_LABELS:
        per_tile = []
        for m in layouts:
            sel = m.cells.label == LABELS.index(rare)
            ix = (m.cells.cx[sel] // tile).astype(int) * 100 + (m.cells.cy[sel] // tile).astype(int)
            tiles = np.bincount(ix, minlength=100 * 100)
            cx, cy = m.cells.cx // tile, m.cells.cy // tile
            occupied = np.unique(cx.astype(int) * 100 + cy.astype(int))
            per_tile.append(tiles[occupied])
        values = np.sort(np.concatenate(per_tile))[::-1]
        assert (values > 0).mean() < 0.35, rare
        top = values[: max(1, len(values) // 10)].sum()
        assert top / values.sum() > 0.4, rare


def test_rare_types_are_rare_on_realistic_slides() -> None:
    """Selection is measured on this cohort: a "rare" type must be rare, as in real tissue
    (a few per cent of nuclei at most), or enriching it means little."""
    from histocurate.config import SynthConfig
    from histocurate.synth.cohort import cohort_of, slide_seed

    layouts = [
        build_slide(indication=ind, cohort=cohort_of(ind, 0), width=8192, height=8192,
                    mpp=0.25, seed=slide_seed(0, ind, 0))
        for ind in SynthConfig().indications
    ]  # fmt: skip
    labels = np.concatenate([m.cells.label for m in layouts])
    share = np.bincount(labels, minlength=len(LABELS)) / len(labels)
    for rare in RARE_LABELS:
        assert 0 < share[LABELS.index(rare)] < 0.03, (rare, share[LABELS.index(rare)])
    common = ("cancer_cell", "lymphocyte", "fibroblast")
    assert all(share[LABELS.index(c)] > 0.1 for c in common)


def test_truth_in_tiles_maps_to_read_region(cohort: list[SyntheticSlide]) -> None:
    record = cohort[1]
    truth = read_partition(Path(record.truth_path).parent, record.slide_id, TRUTH)
    slide = openslide.OpenSlide(record.path)
    rows = []
    for y in range(0, 1536 - 448 + 1, 448):
        for x in range(0, 1536 - 448 + 1, 448):
            rows.append({"tile_id": f"t{x}_{y}", "slide_id": record.slide_id, "x": x, "y": y,
                         "size_level0": 448, "tile_px": 448})  # fmt: skip
    tiles = pd.DataFrame(rows)
    inside = truth_in_tiles(truth, tiles)
    assert list(inside.columns) == ["tile_id", "slide_id", "nucleus_id", "x", "y", "label",
                                    "polygon"]  # fmt: skip
    centroid_in = (truth["x"] < 1344) & (truth["y"] < 1344)
    assert len(inside) == int(centroid_in.sum())
    busiest = inside["tile_id"].value_counts().index[0]
    tile = tiles.set_index("tile_id").loc[busiest]
    crop = np.asarray(slide.read_region((int(tile.x), int(tile.y)), 0, (448, 448)).convert("RGB"))
    mine = inside[inside["tile_id"] == busiest]
    assert (mine["x"].between(0, 448) & mine["y"].between(0, 448)).all()
    mask = polygon_mask(
        [p for p, lab in zip(shapely.from_wkb(mine["polygon"].to_numpy()), mine["label"],
                             strict=True) if lab != "red_blood_cell"],
        (448, 448),
    )  # fmt: skip
    h = haematoxylin(crop, record)
    core = ndimage.binary_erosion(mask, iterations=1)
    assert core.sum() > 500 and np.median(h[core]) > 0.45
    # half resolution (a 20x read of the same area): coordinates scale by tile_px/size_level0
    half = truth_in_tiles(truth, tiles.assign(tile_px=224))
    merged = inside.merge(half, on=["tile_id", "nucleus_id"], suffixes=("", "_half"))
    np.testing.assert_allclose(merged["x_half"], merged["x"] / 2)
    a = shapely.from_wkb(merged["polygon"].to_numpy())
    b = shapely.from_wkb(merged["polygon_half"].to_numpy())
    np.testing.assert_allclose(shapely.area(b), shapely.area(a) / 4)


def test_benchmark_slide_opens(tmp_path: Path) -> None:
    from histocurate.synth import write_benchmark_slide

    path = write_benchmark_slide(tmp_path / "big.tiff", width_px=3000, height_px=2200, seed=1)
    slide = openslide.OpenSlide(path)
    assert slide.dimensions == (3000, 2200)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert slide.level_count == len(level_sizes(3000, 2200, 512))
    thumb = np.asarray(slide.get_thumbnail((300, 220)).convert("RGB"))
    assert thumb.min() < 200 < thumb.max()
