"""Guidance, batched inference and per-patch post-processing, with a known stand-in network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nuclick.errors import NuClickError
from nuclick.guidance import build_inputs, click_pixels, pad_to_patch, patch_origins
from nuclick.predict import PredictOptions, predict, predict_many
from nuclick.testing.synthetic import toy_sample
from nuclick.watershed import watershed_segment


class DiscNet(nn.Module):
    """Logit = radius - distance to the click: a disc whose probability falls with distance."""

    def __init__(self, radius: float = 5.0, *, silent: bool = False) -> None:
        super().__init__()
        self.radius, self.silent = radius, silent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        flat = x[:, 3].reshape(n, -1).argmax(1)
        r, c = (flat // w).float(), (flat % w).float()
        yy = torch.arange(h, dtype=torch.float32)[None, :, None]
        xx = torch.arange(w, dtype=torch.float32)[None, None, :]
        dist = torch.sqrt((yy - r[:, None, None]) ** 2 + (xx - c[:, None, None]) ** 2)
        logits = self.radius + 0.5 - dist
        return (logits - 100 if self.silent else logits)[:, None]


IMAGE = np.full((200, 300, 3), 200, dtype=np.uint8)


def test_patch_is_centred_and_kept_inside() -> None:
    rc = np.array([[100, 150], [3, 5], [195, 297]])
    origins = patch_origins(rc, (200, 300), 128)
    assert origins.tolist() == [[36, 86], [0, 0], [72, 172]]
    small = pad_to_patch(np.zeros((50, 70, 3), np.uint8), 128)
    assert small.shape == (128, 128, 3) and small[100, 100, 0] == 255
    assert patch_origins(np.array([[10, 60]]), small.shape[:2], 128).tolist() == [[0, 0]]


def test_exclusion_holds_other_clicks_inside_the_patch_only() -> None:
    pts = np.array([[150.5, 100.5], [160.5, 100.5], [290.5, 190.5], [151.0, 101.0]])
    rc = click_pixels(pts)
    same = np.array([0, 1, 2, 0])  # click 3 marks the same nucleus as click 0
    inputs, origins = build_inputs(IMAGE, rc, [0], patch_size=128, same_nucleus=same)
    assert inputs.shape == (1, 5, 128, 128)
    assert inputs[0, 3].sum() == 1 and inputs[0, 3, 100 - origins[0, 0], 150 - origins[0, 1]] == 1
    assert inputs[0, 4].sum() == 1  # click 1 only: click 2 is outside, click 3 is a duplicate
    assert inputs[0, 4, 100 - origins[0, 0], 160 - origins[0, 1]] == 1
    assert np.allclose(inputs[0, 0], 200 / 255)


def test_masks_polygons_and_batch_independence() -> None:
    pts = np.array([[40.5, 40.5], [100.5, 60.5], [250.5, 150.5], [60.5, 40.5]])
    one = predict(IMAGE, pts, DiscNet(5), batch_size=1)
    many = predict(IMAGE, pts, DiscNet(5), batch_size=64)
    assert np.array_equal(one.instance_map, many.instance_map)
    assert one.segmenter == "nuclick" and not one.fallback.any()
    for i, poly in enumerate(many.polygons):
        assert poly.is_valid and abs(poly.area - np.pi * 5.5**2) < 15
        assert poly.contains(__import__("shapely").Point(pts[i]))
        assert (many.instance_map == i + 1).sum() == pytest.approx(np.pi * 5.5**2, abs=12)


def test_overlap_goes_to_the_higher_probability_whatever_the_order() -> None:
    pts = np.array([[50.5, 50.5], [58.5, 50.5]])  # 8 px apart, discs of radius 7 overlap
    a = predict(IMAGE, pts, DiscNet(7))
    b = predict(IMAGE, pts[::-1], DiscNet(7))
    assert np.array_equal(a.instance_map, np.where(b.instance_map > 0, 3 - b.instance_map, 0))
    row = a.instance_map[50]
    assert (row[45:55] == 1).all() and (row[55:62] == 2).all()  # boundary half-way
    assert a.polygons[0].intersection(a.polygons[1]).area < 1e-6


def test_click_outside_every_component_falls_back_to_a_disc() -> None:
    res = predict(IMAGE, np.array([[20.5, 20.5], [80.5, 20.5]]), DiscNet(silent=True))
    assert res.fallback.tolist() == [True, True] and res.n_fallback == 2
    assert all(8 < p.area < 80 for p in res.polygons)


def test_duplicates_share_one_mask() -> None:
    pts = np.array([[50.5, 50.5], [50.9, 50.7], [120.5, 80.5]])
    res = predict(IMAGE, pts, DiscNet(5))
    assert res.instance_of[0] == res.instance_of[1] != res.instance_of[2]
    assert res.polygons[0].equals(res.polygons[1]) and res.merged.tolist() == [False, True, False]


def test_many_images_share_batches_and_small_images_are_padded() -> None:
    small = np.full((40, 60, 3), 180, np.uint8)
    results = predict_many(
        [IMAGE, small],
        [np.array([[10.5, 10.5]]), np.array([[30.5, 20.5], [5.5, 35.5]])],
        DiscNet(4),
        options=PredictOptions(batch_size=2),
    )
    assert [r.instance_map.shape for r in results] == [(200, 300), (40, 60)]
    assert len(results[1].polygons) == 2 and not results[1].fallback.any()
    assert all(0 <= x <= 60 and 0 <= y <= 40 for x, y in results[1].polygons[1].exterior.coords)


def test_bad_input() -> None:
    with pytest.raises(NuClickError, match="outside"):
        predict(IMAGE, np.array([[10.0, 10.0], [300.0, 5.0]]), DiscNet())
    with pytest.raises(NuClickError, match="RGB"):
        predict(np.zeros((50, 50), np.uint8), np.array([[10.0, 10.0]]), DiscNet())
    with pytest.raises(NuClickError, match=r"\(N, 2\)"):
        predict(IMAGE, np.array([1.0, 2.0, 3.0]), DiscNet())
    empty = predict(IMAGE, np.zeros((0, 2)), DiscNet())
    assert empty.polygons == [] and empty.instance_map.max() == 0


def test_two_thousand_clicks() -> None:
    rng = np.random.default_rng(0)
    image = np.full((448, 448, 3), 200, np.uint8)
    pts = rng.uniform(0, 448, (2000, 2))
    res = predict(image, pts, DiscNet(3), batch_size=256)
    assert len(res.polygons) == 2000 and res.instance_map.max() <= 2000
    assert all(not p.is_empty for p in res.polygons)


def test_watershed_finds_toy_nuclei() -> None:
    sample = toy_sample(np.random.default_rng(3), size=128, n_nuclei=8)
    ids = np.arange(1, sample.inst_map.max() + 1)
    from scipy import ndimage as ndi

    cents = np.asarray(ndi.center_of_mass(np.ones_like(sample.inst_map), sample.inst_map, ids))
    res = watershed_segment(sample.image, cents[:, ::-1] + 0.5)
    assert res.segmenter == "watershed"
    dices = []
    for i, nid in enumerate(ids):
        truth, pred = sample.inst_map == nid, res.instance_map == res.instance_of[i]
        dices.append(2 * (truth & pred).sum() / (truth.sum() + pred.sum()))
    assert np.mean(dices) > 0.7, dices
