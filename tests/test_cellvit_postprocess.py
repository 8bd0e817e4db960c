"""HoVer post-processing: the fast path equals a plain HoVer-Net reference, the cells table
holds hand-computed values, outlines equal the geometry package's."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from histocurate.cellvit import filters
from histocurate.cellvit.postprocess import (
    HoverOptions,
    PostprocessPool,
    cells_table,
    first_argmax,
    instances_from_maps,
)
from histocurate.cellvit.targets import hv_maps
from histocurate.geometry import polygons_of
from histocurate.geometry.instances import instance_polygons, instance_wkb

ELLIPSE5 = np.array([[0, 0, 1, 0, 0], [1] * 5, [1] * 5, [1] * 5, [0, 0, 1, 0, 0]], bool)


def hover_reference(np_prob: np.ndarray, hv: np.ndarray, ksize: int, min_size: int) -> np.ndarray:
    """HoVer-Net's procedure, step by step with plain scipy / skimage calls (the note's)."""

    def small_out(lab: np.ndarray) -> np.ndarray:
        sizes = np.bincount(lab.ravel())
        lab = lab.copy()
        lab[(sizes < min_size)[lab] & (lab > 0)] = 0
        return lab

    def norm(a: np.ndarray) -> np.ndarray:
        return (a - a.min()) / (a.max() - a.min())

    def sobel(a: np.ndarray, axis: int) -> np.ndarray:
        d, s = filters.sobel_kernels(ksize)
        out = ndi.correlate1d(a.astype(np.float64), d, axis=axis, mode="mirror")
        return ndi.correlate1d(out, s, axis=1 - axis, mode="mirror")

    blb = small_out(ndi.label(np_prob >= 0.5)[0]) > 0
    sh = 1 - norm(sobel(norm(hv[0]), 1))
    sv = 1 - norm(sobel(norm(hv[1]), 0))
    overall = np.clip(np.maximum(sh, sv) - (1 - blb), 0, None)
    k = np.array([0.25, 0.5, 0.25])
    dist = -ndi.correlate1d(ndi.correlate1d((1 - overall) * blb, k, 0, mode="mirror"), k, 1,
                            mode="mirror")  # fmt: skip
    marker = ndi.binary_fill_holes(blb & (overall < 0.4))
    marker = ndi.binary_erosion(marker, ELLIPSE5, border_value=1)
    marker = ndi.binary_dilation(marker, ELLIPSE5, border_value=0)
    seeds = small_out(ndi.label(marker)[0])
    return watershed(dist, seeds, mask=blb)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b)) and bool(
        np.all((pairs[0] == 0) == (pairs[1] == 0))
    )


def touching_nuclei(seed: int, size: int = 160, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    inst = np.zeros((size, size), np.int32)
    rr, cc = np.indices(inst.shape)
    for i in range(1, n + 1):
        r, c = rng.uniform(0, size, 2)
        a, b = rng.uniform(5, 11, 2)
        blob = ((rr - r) / a) ** 2 + ((cc - c) / b) ** 2 <= 1
        inst[blob & (inst == 0)] = i
    return inst


@pytest.mark.parametrize(("seed", "mpp"), [(0, 0.25), (1, 0.25), (2, 0.5)])
def test_instance_map_equals_the_plain_hover_reference(seed: int, mpp: float) -> None:
    rng = np.random.default_rng(seed)
    inst = touching_nuclei(seed)
    np_prob = np.clip(ndi.gaussian_filter((inst > 0).astype(float), 1) + rng.normal(0, 0.05,
                      inst.shape), 0, 1)  # fmt: skip
    hv = np.stack([ndi.gaussian_filter(h, 1) for h in hv_maps(inst)])
    hv = hv + rng.normal(0, 0.05, hv.shape)
    options = HoverOptions.for_mpp(mpp)
    ours, cells = instances_from_maps(np_prob, hv, mpp=mpp)
    want = hover_reference(np_prob, hv, options.sobel_ksize, options.min_size)
    assert ours.dtype == np.int32 and int(ours.max()) == len(cells) > 20
    assert same_partition(ours, want)
    assert sorted(np.unique(ours)[1:]) == list(range(1, len(cells) + 1))


def test_cells_table_hand_computed() -> None:
    inst = np.zeros((40, 40), np.int32)
    inst[5:15, 5:15] = 1
    inst[22:34, 20:32] = 2
    tp = np.zeros((3, 40, 40), np.float32)
    tp[0] = 1.0  # background everywhere...
    tp[:, 5:9, 5:15] = np.array([0.1, 0.2, 0.7])[:, None, None]  # ...but 40 px of type 2
    inst_map, cells = instances_from_maps((inst > 0).astype(np.float32), hv_maps(inst), tp)
    assert same_partition(inst_map, inst)
    first = cells.iloc[0]
    assert (first.x, first.y, first.area) == (10.0, 10.0, 100.0)
    assert (first.bbox_x0, first.bbox_y0, first.bbox_x1, first.bbox_y1) == (5, 5, 15, 15)
    assert first.type == 2 and first.confidence == pytest.approx(0.4)  # background ignored
    assert first.prob_2 == pytest.approx((40 * 0.7) / 100)
    assert first.prob_0 == pytest.approx((40 * 0.1 + 60) / 100)
    second = cells.iloc[1]
    assert second.type == 0 and second.confidence == 1.0  # only background votes: kept
    poly = shapely.from_wkb(first.polygon)
    assert poly.bounds == (5, 5, 15, 15) and poly.area == 99.5  # corners cut by 1/8 px each
    dropped_map, dropped = instances_from_maps(
        (inst > 0).astype(np.float32), hv_maps(inst), tp,
        options=HoverOptions(drop_untyped=True),
    )  # fmt: skip
    assert len(dropped) == 1 and int(dropped_map.max()) == 1
    assert np.array_equal(dropped_map > 0, inst == 1)


def test_polygons_equal_the_geometry_package_outlines() -> None:
    rng = np.random.default_rng(3)
    inst = np.zeros((90, 90), np.int32)
    rr, cc = np.indices(inst.shape)
    for i in range(1, 60):  # overlapping: fragments, holes and diagonal contacts
        r, c = rng.uniform(0, 90, 2)
        a, b = rng.uniform(1, 9, 2)
        inst[((rr - r) / a) ** 2 + ((cc - c) / b) ** 2 <= 1] = i
    inst[10:13, 40] = 77
    inst[11, 41] = 77  # a tiny piece, and ids with gaps
    ours = instance_polygons(inst)
    wkb = instance_wkb(inst)
    for label, want in polygons_of(inst).items():
        got = ours[label]
        assert got is not None and got.is_valid and got.equals(want), label
        decoded = shapely.from_wkb(wkb[label])
        assert decoded.is_valid and decoded.equals(want), label
    assert all(ours[i] is None for i in range(len(ours)) if not np.any(inst == i))


def test_filters_match_opencv_definitions() -> None:
    d, s = filters.sobel_kernels(5)
    assert d.tolist() == [-1, -2, 0, 2, 1] and s.tolist() == [1, 4, 6, 4, 1]
    ramp = np.tile(np.arange(30, dtype=np.float64), (30, 1))
    # interior: sum(k * d_k) * sum(s) = 8 * 16; reflect-101 border: 0 at columns 0 and 29
    sx = filters.sobel_x(ramp, 5)
    assert sx[15, 15] == 128 and sx[15, 0] == 0 and np.all(filters.sobel_y(ramp, 5) == 0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((40, 50)) > 0.35
        assert np.array_equal(filters.fill_holes(m), ndi.binary_fill_holes(m))
        opened = ndi.binary_dilation(ndi.binary_erosion(m, ELLIPSE5, border_value=1), ELLIPSE5,
                                     border_value=0)  # fmt: skip
        assert np.array_equal(filters.open_ellipse5(m), opened)
    assert np.all(filters.minmax(np.full((3, 3), 2.0)) == 0)


def test_opencv_path_equals_the_numpy_fallback() -> None:
    assert filters.opencv() is not None  # albumentations brings it
    rng = np.random.default_rng(1)
    x = rng.random((50, 60)).astype(np.float32)
    for ksize in (11, 21):
        d, s = filters.sobel_kernels(ksize)
        for fast, axis in ((filters.sobel_x(x, ksize), 1), (filters.sobel_y(x, ksize), 0)):
            slow = filters.line_pass(filters.line_pass(x, d, axis), s, 1 - axis)
            np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5 * np.abs(slow).max())
    k = np.array([0.25, 0.5, 0.25])
    blurred = ndi.correlate1d(ndi.correlate1d(x, k, 0, mode="mirror"), k, 1, mode="mirror")
    np.testing.assert_allclose(filters.blur3(x), blurred, atol=1e-6)
    m = rng.random((50, 60)) > 0.3
    assert np.array_equal(filters.open_ellipse5(m), filters.open_ellipse5_numpy(m))
    labels, sizes, boxes = filters.label4(m)
    plain, n = ndi.label(m)
    assert np.array_equal(labels, plain) and np.array_equal(sizes, np.bincount(plain.ravel()))
    want = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndi.find_objects(plain)]
    assert boxes[1:].tolist() == [list(b) for b in want] and len(boxes) == n + 1


def test_bad_maps_and_options() -> None:
    hv = np.zeros((2, 20, 20), np.float32)
    bad = np.zeros((20, 20), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="np_prob holds NaN"):
        instances_from_maps(bad, hv)
    with pytest.raises(ValueError, match=r"hv must be \(2, H, W\)"):
        instances_from_maps(np.zeros((20, 20)), np.zeros((2, 20, 21)))
    assert HoverOptions.for_mpp(0.5).sobel_ksize == 11
    assert HoverOptions.for_mpp(0.5).min_size == HoverOptions.for_mpp(0.5).marker_min_size == 5
    empty, cells = instances_from_maps(np.zeros((20, 20)), hv)
    assert int(empty.max()) == 0 and len(cells) == 0


def test_pool_gives_the_same_results_in_order() -> None:
    tiles = []
    for seed in (4, 5):
        inst = touching_nuclei(seed, size=96, n=12)
        tiles.append(((inst > 0).astype(np.float32), hv_maps(inst), None))
    direct = [instances_from_maps(*t) for t in tiles]
    with PostprocessPool(1) as pool:
        pooled = list(pool.map(tiles))
    with PostprocessPool(0) as inline:
        local = inline.submit(*tiles[1]).result()
    for (a, ca), (b, cb) in zip(direct, pooled, strict=True):
        assert np.array_equal(a, b) and ca.drop(columns="polygon").equals(
            cb.drop(columns="polygon")
        )
    assert np.array_equal(local[0], direct[1][0])


def test_bad_maps_and_settings_are_named() -> None:
    from histocurate.cellvit.hover import HoverOptions
    from histocurate.cellvit.postprocess import instances_from_maps

    flat = np.zeros((8, 8), np.float32)
    hv = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="empty"):
        instances_from_maps(np.zeros((0, 0), np.float32), np.zeros((2, 0, 0), np.float32))
    with pytest.raises(ValueError, match="at least one type"):
        instances_from_maps(flat, hv, np.ones((1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\].*logits"):
        instances_from_maps(flat + 255.0, hv)
    with pytest.raises(ValueError, match="odd and >= 3"):
        HoverOptions(sobel_ksize=4)


@pytest.mark.parametrize("n_cls", [2, 15, 16, 31, 40, 63, 70])
def test_first_argmax_is_numpy_argmax_ties_included(n_cls: int) -> None:
    rng = np.random.default_rng(n_cls)
    probs = rng.integers(0, 3, (n_cls, 4000)).astype(np.float32)  # many exact ties
    assert np.array_equal(first_argmax(probs), probs.argmax(0))


def test_fill_holes_without_opencv_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    masks = [rng.random((40, 50)) > p for p in (0.2, 0.35, 0.6)]
    fast = [filters.fill_holes(m) for m in masks]
    monkeypatch.setattr(filters, "opencv", lambda: None)
    for m, want in zip(masks, fast, strict=True):
        assert np.array_equal(filters.fill_holes(m), want)
        assert np.array_equal(want, ndi.binary_fill_holes(m))


def test_mean_probabilities_are_the_plain_per_nucleus_means() -> None:
    rng = np.random.default_rng(4)
    inst = touching_nuclei(4)
    tp = rng.dirichlet(np.ones(5), inst.shape).transpose(2, 0, 1).astype(np.float32)
    cells = cells_table(inst, tp, HoverOptions(polygons=False))
    for row in cells.itertuples():
        pixels = tp[:, inst == row.cell_id]
        want = pixels.mean(1)
        got = [getattr(row, f"prob_{c}") for c in range(5)]
        np.testing.assert_allclose(got, want, rtol=1e-5)
        votes = np.bincount(pixels.argmax(0), minlength=5)
        assert row.type == (votes[1:].argmax() + 1 if votes[1:].any() else 0)


def test_boxes_and_centroids_of_any_instance_map() -> None:
    """Pieces, holes and runs that wrap from one row's end to the next row's start."""
    rng = np.random.default_rng(5)
    inst = rng.integers(0, 6, (30, 40)).astype(np.int32)  # every id in many pieces
    inst[:, -1] = 3
    inst[1:, 0] = 3  # the last pixel of a row and the first of the next: one id
    cells = cells_table(inst, None, HoverOptions(polygons=False))
    for row, box in zip(cells.itertuples(), ndi.find_objects(inst), strict=True):
        assert (row.bbox_x0, row.bbox_y0, row.bbox_x1, row.bbox_y1) == (
            box[1].start, box[0].start, box[1].stop, box[0].stop)  # fmt: skip
        r, c = np.nonzero(inst == row.cell_id)
        assert (row.x, row.y, row.area) == pytest.approx((c.mean() + 0.5, r.mean() + 0.5, len(r)))


def test_outlines_without_opencv_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from histocurate.geometry import instances

    rng = np.random.default_rng(6)
    maps = [touching_nuclei(6), rng.integers(0, 4, (25, 30)).astype(np.int32)]
    fast = [instance_wkb(m) for m in maps]
    monkeypatch.setattr(instances, "_opencv", lambda: None)
    assert [instance_wkb(m) for m in maps] == fast
    assert instance_wkb(np.zeros((5, 5), np.int32)) == [None]
