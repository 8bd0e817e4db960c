"""Panoptic quality on hand-made maps and polygons: exact fractions, edge cases, bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import shapely

from histocurate.errors import UserInputError
from histocurate.metrics import (
    MetricsInputError,
    PanopticQuality,
    match_instances,
    panoptic_quality,
    panoptic_quality_polygons,
    pooled,
    rasterize,
    tile_mean,
)


def square(
    shape: tuple[int, int], top: int, left: int, h: int, w: int, value: int = 1
) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int64)
    out[top : top + h, left : left + w] = value
    return out


def exact_iou(match) -> list[Fraction]:  # type: ignore[no-untyped-def]
    return [Fraction(int(i), int(u)) for i, u in zip(match.intersection, match.union, strict=True)]


def test_shifted_square_matches_with_exact_iou() -> None:
    t = square((20, 20), 2, 2, 10, 10, value=4)
    p = square((20, 20), 2, 4, 10, 10, value=9)  # shifted 2 px: 80 / 120
    m = match_instances(t, p)
    assert exact_iou(m) == [Fraction(2, 3)]
    assert (m.true_ids.tolist(), m.pred_ids.tolist()) == ([4], [9])
    r = panoptic_quality(t, p)
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)
    assert r.dq == 1.0
    assert r.sq == pytest.approx(2 / 3, abs=1e-15)
    assert r.pq == pytest.approx(2 / 3, abs=1e-15)


def test_shift_below_threshold_is_one_fp_and_one_fn() -> None:
    t = square((20, 20), 2, 2, 10, 10)
    p = square((20, 20), 2, 6, 10, 10)  # 60 / 140 = 3/7 < 0.5
    r = panoptic_quality(t, p)
    assert (r.tp, r.fp, r.fn, r.dq, r.sq, r.pq) == (0, 1, 1, 0.0, 0.0, 0.0)
    assert panoptic_quality(t, p, iou_threshold=0.4).tp == 1


def test_shifted_discs_iou_equals_pixel_fraction() -> None:
    from skimage.draw import disk

    t = np.zeros((64, 64), np.int32)
    p = np.zeros((64, 64), np.int32)
    t[disk((30, 30), 10, shape=t.shape)] = 1
    p[disk((30, 33), 10, shape=p.shape)] = 1
    inter = int(((t > 0) & (p > 0)).sum())
    union = int(((t > 0) | (p > 0)).sum())
    m = match_instances(t, p)
    assert exact_iou(m) == [Fraction(inter, union)]
    assert panoptic_quality(t, p).pq == pytest.approx(inter / union)


def test_split_nucleus_exactly_half_is_not_a_match() -> None:
    t = square((20, 20), 0, 0, 10, 10)
    p = square((20, 20), 0, 0, 10, 5, 1) + square((20, 20), 0, 5, 10, 5, 2)
    r = panoptic_quality(t, p)  # each half: IoU 50/100 = 0.5, not > 0.5
    assert (r.tp, r.fp, r.fn) == (0, 2, 1)


def test_split_nucleus_unequal_halves() -> None:
    t = square((20, 20), 0, 0, 10, 10)
    p = square((20, 20), 0, 0, 10, 6, 1) + square((20, 20), 0, 6, 10, 4, 2)
    r = panoptic_quality(t, p)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert r.dq == pytest.approx(2 / 3)
    assert r.sq == pytest.approx(0.6)
    assert r.pq == pytest.approx(0.4)


def test_merged_nuclei() -> None:
    t = square((20, 20), 0, 0, 10, 6, 1) + square((20, 20), 0, 6, 10, 4, 2)
    p = square((20, 20), 0, 0, 10, 10)
    r = panoptic_quality(t, p)
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)
    assert r.pq == pytest.approx(2 / 3 * 0.6)


def test_empty_maps_are_defined() -> None:
    empty = np.zeros((8, 8), np.int32)
    r = panoptic_quality(empty, empty)
    assert (r.tp, r.fp, r.fn, r.iou_sum) == (0, 0, 0, 0.0)
    assert math.isnan(r.dq) and math.isnan(r.sq) and math.isnan(r.pq)
    only_pred = panoptic_quality(empty, square((8, 8), 1, 1, 3, 3))
    assert (only_pred.fp, only_pred.dq, only_pred.sq, only_pred.pq) == (1, 0.0, 0.0, 0.0)
    only_true = panoptic_quality(square((8, 8), 1, 1, 3, 3), empty)
    assert (only_true.fn, only_true.pq) == (1, 0.0)


def test_non_contiguous_and_huge_ids() -> None:
    a = square((30, 30), 0, 0, 10, 10, 5) + square((30, 30), 15, 15, 8, 8, 1000)
    b = square((30, 30), 0, 1, 10, 10, 2**40) + square((30, 30), 15, 15, 8, 8, 3)
    a, b = a.astype(np.int64), b.astype(np.int64)
    m = match_instances(a, b)
    assert sorted(zip(m.true_ids.tolist(), m.pred_ids.tolist(), strict=True)) == [
        (5, 2**40),
        (1000, 3),
    ]
    assert exact_iou(m)[m.true_ids.tolist().index(5)] == Fraction(90, 110)
    assert panoptic_quality(a, b).tp == 2


def test_nucleus_on_the_tile_border() -> None:
    t = square((20, 20), 0, 0, 4, 6)  # touches the top and left borders
    p = square((20, 20), 0, 0, 4, 5)
    assert exact_iou(match_instances(t, p)) == [Fraction(20, 24)]
    # Polygons crossing the border are clipped to the tile before comparison.
    true_poly = [shapely.box(-5, 0, 5, 10)]
    pred_poly = [shapely.box(0, 0, 5, 10)]
    r = panoptic_quality_polygons(true_poly, pred_poly, shape=(20, 20))
    assert (r.tp, r.fp, r.fn, r.sq) == (1, 0, 0, 1.0)


def test_below_half_threshold_pairs_one_to_one() -> None:
    t = square((12, 16), 0, 0, 10, 10)
    p = square((12, 16), 0, 0, 10, 6, 1) + square((12, 16), 0, 6, 10, 4, 2)  # IoU 0.6, 0.4
    m = match_instances(t, p, iou_threshold=0.3)
    assert m.pred_ids.tolist() == [1]
    assert panoptic_quality(t, p, iou_threshold=0.3).fp == 1


def test_below_half_threshold_keeps_most_pairs() -> None:
    t = square((12, 16), 0, 0, 10, 10, 1) + square((12, 16), 0, 10, 10, 4, 2)
    p = square((12, 16), 0, 0, 10, 6, 1) + square((12, 16), 0, 6, 10, 8, 2)
    # Candidates at 0.25: (1, 1) IoU 0.6, (1, 2) IoU 40/140, (2, 2) IoU 0.5.
    m = match_instances(t, p, iou_threshold=0.25)
    assert sorted(zip(m.true_ids.tolist(), m.pred_ids.tolist(), strict=True)) == [(1, 1), (2, 2)]


def test_polygons_and_maps_agree() -> None:
    rng = np.random.default_rng(3)
    true = [shapely.Point(x, y).buffer(5) for x, y in rng.uniform(8, 56, (6, 2))]
    pred = [shapely.affinity.translate(g, 1.3, -0.7) for g in true[:5]]
    shape = (64, 64)
    by_polygon = panoptic_quality_polygons(true, pred, shape=shape)
    by_map = panoptic_quality(rasterize(true, shape=shape), rasterize(pred, shape=shape))
    assert by_polygon == by_map
    assert (by_polygon.tp, by_polygon.fn) == (5, 1)
    wkb = [shapely.to_wkb(g) for g in true]
    assert panoptic_quality_polygons(wkb, wkb, shape=shape).pq == 1.0


def test_rasterize_matches_skimage_and_holes() -> None:
    from skimage.draw import polygon as draw_polygon

    rng = np.random.default_rng(0)
    for _ in range(20):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radii = rng.uniform(3, 9, 12)
        xy = np.c_[20 + radii * np.cos(angles), 20 + radii * np.sin(angles)]
        ours = rasterize([shapely.Polygon(xy)], shape=(40, 40))
        ref = np.zeros((40, 40), np.int32)
        rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=ref.shape)
        ref[rr, cc] = 1
        assert np.array_equal(ours, ref)
    ring = shapely.box(2, 2, 12, 12).difference(shapely.box(5, 5, 9, 9))
    m = rasterize([ring], shape=(16, 16))
    assert m.sum() == 100 - 16 and m[6, 6] == 0 and m[3, 3] == 1


def test_pooled_and_tile_mean() -> None:
    a = PanopticQuality(tp=2, fp=0, fn=0, iou_sum=1.8)
    b = PanopticQuality(tp=0, fp=1, fn=1, iou_sum=0.0)
    empty = PanopticQuality(0, 0, 0, 0.0)
    total = pooled([a, b, empty])
    assert (total.tp, total.fp, total.fn) == (2, 1, 1)
    assert total.dq == pytest.approx(2 / 3)
    assert total.sq == pytest.approx(0.9)
    means = tile_mean([a, b, empty])  # the empty tile is skipped
    assert means["dq"] == pytest.approx(0.5)
    assert means["pq"] == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("true", "pred", "message"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), "differ in shape"),
        (np.zeros((4, 4), float), np.zeros((4, 4), int), "integer dtype"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), int), "integer dtype"),
        (np.full((4, 4), -1), np.zeros((4, 4), int), ">= 0"),
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), int), "2-D"),
    ],
)
def test_bad_maps_are_refused(true: np.ndarray, pred: np.ndarray, message: str) -> None:
    with pytest.raises(MetricsInputError, match=message) as info:
        panoptic_quality(true, pred)
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)


def test_bad_threshold_and_geometry() -> None:
    t = np.zeros((4, 4), int)
    with pytest.raises(MetricsInputError, match="iou_threshold"):
        panoptic_quality(t, t, iou_threshold=1.0)
    with pytest.raises(MetricsInputError, match="not a polygon"):
        panoptic_quality_polygons([shapely.Point(1, 1)], [], shape=(4, 4))
