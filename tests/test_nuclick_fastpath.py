"""The fast post-processing gives exactly what the plain per-click reference gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from nuclick.guidance import build_inputs, click_pixels, patch_origins
from nuclick.postprocess import (
    PatchMask,
    SegmentationResult,
    clicked_components,
    finalize,
    from_probabilities,
    keep_clicked_component,
    resolve_overlaps,
)
from nuclick.predict import PredictOptions, duplicate_groups, predict_many
from nuclick.testing.reference import (
    crop_to_mask,
    finalize_loop,
    reference_from_probabilities,
    resolve_overlaps_loop,
)
from nuclick.testing.synthetic import oracle_probabilities, toy_sample


def _same(a: SegmentationResult, b: SegmentationResult) -> None:
    assert np.array_equal(a.instance_map, b.instance_map)
    assert np.array_equal(a.instance_of, b.instance_of)
    assert np.array_equal(a.fallback, b.fallback) and np.array_equal(a.merged, b.merged)
    # the same outlines, vertex for vertex (the fast path may start a ring elsewhere)
    assert [p.normalize().wkb for p in a.polygons] == [p.normalize().wkb for p in b.polygons]


def _case(seed: int, *, size: int = 200, n: int = 40, silent: float = 0.1):
    """A toy image's truth, clicks at centroids (some doubled), oracle maps (some empty)."""
    rng = np.random.default_rng(seed)
    inst = toy_sample(rng, size=size, n_nuclei=n, radius=(5.0, 11.0)).inst_map
    ids = np.arange(1, inst.max() + 1)
    cents = np.asarray(ndi.center_of_mass(np.ones_like(inst), inst, ids))[:, ::-1] + 0.5
    pts = np.concatenate([cents, cents[:3] + 0.7])  # three double clicks
    rc = click_pixels(pts)
    same = duplicate_groups(pts, 2.0)
    run = np.flatnonzero(same == np.arange(len(pts)))
    nucleus = inst[rc[:, 0], rc[:, 1]]
    nucleus[rng.random(len(nucleus)) < silent] = 0  # the network sees nothing: fallback discs
    origins = patch_origins(rc[run], inst.shape, 128)
    probs = oracle_probabilities(inst, rc[run], nucleus[run], origins, seed=seed)
    return (inst.shape, rc, same, probs, origins), pts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tile_results_equal_the_reference(seed: int) -> None:
    case, _ = _case(seed)
    fast, ref = from_probabilities(*case), reference_from_probabilities(*case)
    _same(fast, ref)
    assert fast.fallback.any() and fast.merged.any()  # the cases cover discs and doubles
    assert len(np.unique(fast.instance_map)) > 10


def test_patch_stage_equals_the_reference_on_hard_masks() -> None:
    """Noise maps: specks under min_size, holes, rings closed only diagonally, islands."""
    rng = np.random.default_rng(5)
    probs = np.stack(
        [ndi.gaussian_filter(rng.normal(0, 1, (64, 64)), s) for s in rng.uniform(0.6, 3, 160)]
    ).astype(np.float32)
    probs = (probs - probs.mean(axis=(1, 2), keepdims=True)) / probs.std(axis=(1, 2))[:, None, None]
    probs = 1 / (1 + np.exp(-probs * 3))
    yy, xx = np.mgrid[0:64, 0:64]
    ring = np.abs(np.hypot(yy - 32, xx - 32) - 10) < 1.0  # diagonal steps: a 4-connected hole
    probs[:20] = np.where(ring, 0.9, probs[:20] * 0.5).astype(np.float32)
    probs[20:25] = 0.1  # empty
    clicks = rng.integers(0, 64, (len(probs), 2))
    clicks[:10] = 32  # inside the ring's hole
    for min_size in (1, 10):
        fast = clicked_components(probs, clicks, min_size=min_size)
        for prob, click, (patch, offset) in zip(probs, clicks, fast, strict=True):
            ref = keep_clicked_component(prob, (int(click[0]), int(click[1])), min_size=min_size)
            cropped, origin = crop_to_mask(ref, np.zeros(2, np.int64))
            assert tuple(origin) == offset and patch.fallback == ref.fallback
            assert np.array_equal(patch.mask, cropped.mask)
            assert np.array_equal(patch.score, cropped.score)


def test_overlaps_and_splits_equal_the_loop_with_ties() -> None:
    """Quantised scores (many ties), clicks on one pixel (the order decides), split masks."""
    rng = np.random.default_rng(7)
    shape = (90, 110)
    rc = rng.integers(0, 90, (60, 2))
    rc[5] = rc[4]  # same pixel: the first click wins a full tie
    patches: list[PatchMask | None] = []
    origins = np.zeros((60, 2), np.int64)
    for i in range(60):
        h, w = rng.integers(4, 30, 2)
        mask = rng.random((h, w)) < 0.7
        score = np.where(mask, np.round(rng.random((h, w)) * 4) / 4, 0).astype(np.float32)
        patches.append(None if i == 7 else PatchMask(mask, score, False))
        origins[i] = rc[i] - rng.integers(0, [h, w])
    origins = np.maximum(origins, 0)
    a = resolve_overlaps(shape, rc, patches, origins)
    assert np.array_equal(a, resolve_overlaps_loop(shape, rc, patches, origins))
    fallback = rng.random(60) < 0.2
    same = np.arange(60)
    same[7] = 3
    _same(
        finalize(a, rc, fallback=fallback, same_as=same, segmenter="x"),
        finalize_loop(a, rc, fallback=fallback, same_as=same, segmenter="x"),
    )


def test_guidance_equals_the_plain_loop() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)
    rc = np.stack([rng.integers(0, 150, 90), rng.integers(0, 170, 90)], axis=1)
    same = np.arange(90)
    same[10:20] = 0
    index = rng.choice(90, 30, replace=False)
    fast, origins = build_inputs(image, rc, index, patch_size=128, same_nucleus=same)
    plain = np.zeros_like(fast)
    for k, i in enumerate(index):
        r0, c0 = origins[k]
        plain[k, :3] = image[r0 : r0 + 128, c0 : c0 + 128].transpose(2, 0, 1) / np.float32(255)
        plain[k, 3, rc[i, 0] - r0, rc[i, 1] - c0] = 1
        for j in range(90):
            r, c = rc[j] - (r0, c0)
            if j != i and same[j] != same[i] and 0 <= r < 128 and 0 <= c < 128:
                plain[k, 4, r, c] = 1
    assert np.array_equal(fast, plain)


class OracleNet(nn.Module):
    """Returns the logits of prepared oracle maps, one per forward row, in call order."""

    def __init__(self, probs: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.logit(torch.from_numpy(probs).double()).float()[:, None]
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return out


def test_predict_many_with_and_without_workers_equals_the_reference() -> None:
    made = [_case(s, size=150, n=25) for s in (10, 11, 12)]
    cases = [c for c, _ in made]
    images = [np.full((*c[0], 3), 200, np.uint8) for c in cases]
    points = [p for _, p in made]
    probs = np.concatenate([c[3] for c in cases])
    refs = []
    for case in cases:  # what the network returns after the sigmoid, exactly
        ref_probs = torch.sigmoid(torch.logit(torch.from_numpy(case[3]).double()).float())
        refs.append(reference_from_probabilities(*case[:3], ref_probs.numpy(), case[4]))
    for workers in (0, 2):
        opts = PredictOptions(batch_size=16, workers=workers)
        got = predict_many(images, points, OracleNet(probs), options=opts, device="cpu")
        for a, b in zip(got, refs, strict=True):
            _same(a, b)
