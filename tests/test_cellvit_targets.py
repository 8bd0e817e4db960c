"""CellViT targets (HV maps as HoVer-Net / CellViT compute them, NP / NT with ignore) and
losses against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from histocurate.cellvit import losses as L
from histocurate.cellvit.targets import (
    IGNORE_TYPE,
    build_targets,
    hv_maps,
    label_set_bits,
    type_map_from_instances,
)


def hv_reference(inst: np.ndarray) -> np.ndarray:
    """CellViT's per-instance procedure, as the field note describes it (slow, explicit)."""
    x_map = np.zeros(inst.shape, np.float32)
    y_map = np.zeros(inst.shape, np.float32)
    for inst_id in np.unique(inst)[1:]:
        mask = (inst == inst_id).astype(np.uint8)
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        r0, c0 = (r0 - 2 if r0 >= 2 else r0), (c0 - 2 if c0 >= 2 else c0)
        r1 = r1 + 2 if r1 <= inst.shape[0] - 2 else r1
        c1 = c1 + 2 if c1 <= inst.shape[1] - 2 else c1
        crop = mask[r0:r1, c0:c1]
        com = ndi.center_of_mass(crop)
        com_r, com_c = int(com[0] + 0.5), int(com[1] + 0.5)
        xs = np.arange(1, crop.shape[1] + 1) - com_c
        ys = np.arange(1, crop.shape[0] + 1) - com_r
        xx, yy = np.meshgrid(xs, ys)
        xx, yy = (xx * crop).astype(np.float32), (yy * crop).astype(np.float32)
        for grid in (xx, yy):
            neg, pos = grid < 0, grid > 0
            if neg.any():
                grid[neg] /= -grid[neg].min()
            if pos.any():
                grid[pos] /= grid[pos].max()
        box = crop > 0
        x_map[r0:r1, c0:c1][box] = xx[box]
        y_map[r0:r1, c0:c1][box] = yy[box]
    return np.stack([x_map, y_map])


def random_instances(seed: int, size: int = 64, n: int = 25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    inst = np.zeros((size, size), np.int32)
    rr, cc = np.indices(inst.shape)
    for i in range(1, n + 1):
        r, c = rng.uniform(0, size, 2)
        a, b = rng.uniform(1.5, 7, 2)
        inst[((rr - r) / a) ** 2 + ((cc - c) / b) ** 2 <= 1] = i * 3  # ids need not be dense
    return inst


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hv_maps_equal_the_per_instance_reference(seed: int) -> None:
    inst = random_instances(seed)
    np.testing.assert_allclose(hv_maps(inst), hv_reference(inst), atol=1e-6)


def test_hv_maps_hand_computed() -> None:
    inst = np.zeros((3, 7), np.int32)
    inst[1, 1:6] = 4  # a row of five: centre col 3 -> x = col + 1 - 3 = -1, 0, 1, 2, 3
    hv = hv_maps(inst)
    assert hv.dtype == np.float32 and hv.shape == (2, 3, 7)
    np.testing.assert_allclose(hv[0, 1, 1:6], [-1, 0, 1 / 3, 2 / 3, 1], rtol=1e-6)
    # y = (row + 1) - round(centre row) = 1 on the whole row (HoVer-Net's +1 offset)
    np.testing.assert_array_equal(hv[1, 1, 1:6], np.ones(5))
    assert hv[:, 0].sum() == 0 and hv[:, 2].sum() == 0
    square = np.zeros((4, 4), np.int32)
    square[:2, :2] = 1  # centre (0.5, 0.5) rounds to 1: x = col, y = row
    np.testing.assert_array_equal(hv_maps(square)[:, :2, :2], [[[0, 1], [0, 1]], [[0, 0], [1, 1]]])


def test_targets_np_nt_and_label_sets() -> None:
    inst = np.array([[1, 1, 0, 2], [0, 3, 3, 2]])
    types = type_map_from_instances(inst, {1: 2, 2: IGNORE_TYPE})  # 3 has no type: ignored
    sets = np.where(inst == 2, label_set_bits([1, 4]), 0)
    sets[0, 0] = 99  # a set on a typed nucleus is dropped
    t = build_targets(inst, types, sets)
    assert t.np_target.tolist() == [[1, 1, 0, 1], [0, 1, 1, 1]]
    assert t.nt_target.tolist() == [[2, 2, 0, 255], [0, 255, 255, 255]]
    assert t.sets.tolist() == [[0, 0, 0, 18], [0, 0, 0, 18]]
    zero_typed = build_targets(inst, np.zeros_like(inst)).nt_target
    assert zero_typed.tolist() == [[255, 255, 0, 255], [0, 255, 255, 255]]


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_dice_and_binary_focal_tversky_hand_computed() -> None:
    probs = torch.full((1, 2, 1, 2), 0.5)
    onehot = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    s = L.DICE_SMOOTH
    assert math.isclose(
        float(L.dice_loss(probs, onehot)), 2 * (1 - (1 + s) / (2 + s)), rel_tol=1e-6
    )
    assert float(L.dice_loss(onehot, onehot)) == pytest.approx(0.0, abs=1e-6)
    ft = L.focal_tversky_binary(probs, onehot, alpha=0.7, beta=0.3, gamma=4 / 3)
    assert float(ft) == pytest.approx((1 - 1 / 2) ** (4 / 3), rel=1e-5)  # TP = FN = FP = 1


def test_msge_differentiates_the_horizontal_map_along_x() -> None:
    size = 12
    cols = torch.arange(size, dtype=torch.float32).expand(size, size)
    pred = torch.stack([cols, torch.zeros(size, size)])[None]
    focus = torch.zeros(1, size, size)
    focus[0, 3:9, 3:9] = 1  # away from the zero padding
    # interior gradient of a unit ramp: sum over the 5x5 grid of dx^2 / (dx^2 + dy^2) = 12;
    # squared 144 on channel 0, 0 on channel 1; divided by the focus counted twice -> 72
    assert float(L.msge_loss(pred, torch.zeros_like(pred), focus)) == pytest.approx(72.0)
    swapped = L.msge_loss(pred, torch.zeros_like(pred), focus, swapped_axes=True)
    assert float(swapped) == pytest.approx(0.0, abs=1e-5)


def test_label_set_nll_is_minus_log_of_the_summed_probability() -> None:
    log_p = torch.log(_t([0.2, 0.3, 0.5])).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    bits = torch.tensor([[[label_set_bits([1, 2]), 0]]])
    out = L.label_set_nll(log_p, bits)
    assert out[0, 0, 0].item() == pytest.approx(-math.log(0.8), rel=1e-5)
    assert out[0, 0, 1].item() == 0.0


def _outputs(nt_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    shape = nt_logits.shape[-2:]
    return {"np": torch.zeros(1, 2, *shape), "hv": torch.zeros(1, 2, *shape), "tp": nt_logits}


def test_nt_cross_entropy_ignores_and_uses_label_sets() -> None:
    probs = _t([0.2, 0.3, 0.5])
    logits = torch.log(probs).view(1, 3, 1, 1).expand(1, 3, 1, 3).clone()
    nt = torch.tensor([[[2, IGNORE_TYPE, IGNORE_TYPE]]])
    sets = torch.tensor([[[0, label_set_bits([1, 2]), 0]]])
    zeros = torch.zeros(1, 1, 3, dtype=torch.long)
    kw = {"np_target": zeros, "hv_target": torch.zeros(1, 2, 1, 3), "nt_target": nt}
    plain = L.CellViTLoss()(_outputs(logits), sets=sets, **kw)
    assert float(plain.terms["nt_ce"]) == pytest.approx(-math.log(0.5), rel=1e-5)
    with_sets = L.CellViTLoss(label_sets=True)(_outputs(logits), sets=sets, **kw)
    want = (-math.log(0.5) - math.log(0.8)) / 2
    assert float(with_sets.terms["nt_ce"]) == pytest.approx(want, rel=1e-5)
    # Dice and Focal Tversky skip ignored pixels: the same as a tile without them
    alone = L.CellViTLoss()(
        _outputs(logits[..., :1]),
        np_target=zeros[..., :1],
        hv_target=torch.zeros(1, 2, 1, 1),
        nt_target=nt[..., :1],
    )
    for term in ("nt_dice", "nt_ft"):
        assert float(plain.terms[term]) == pytest.approx(float(alone.terms[term]), rel=1e-6)


def test_total_is_the_weighted_sum_and_softmax_is_applied_once() -> None:
    torch.manual_seed(0)
    out = {"np": torch.randn(2, 2, 8, 8), "hv": torch.randn(2, 2, 8, 8),
           "tp": torch.randn(2, 4, 8, 8, requires_grad=True)}  # fmt: skip
    nt = torch.randint(0, 4, (2, 8, 8))
    kw = {"np_target": (nt > 0).long(), "hv_target": torch.rand(2, 2, 8, 8) * 2 - 1,
          "nt_target": nt}  # fmt: skip
    weights = L.LossWeights()
    res = L.CellViTLoss(weights=weights)(out, **kw)
    want = sum(getattr(weights, k) * float(v) for k, v in res.terms.items())
    assert float(res.total.detach()) == pytest.approx(want, rel=1e-5)
    res.total.backward()
    probs = out["tp"].detach().softmax(1)
    onehot = torch.nn.functional.one_hot(nt, 4).permute(0, 3, 1, 2).float()
    ft = L.focal_tversky_per_class(probs, onehot, alpha=0.7, beta=0.3, gamma=4 / 3).sum()
    assert float(res.terms["nt_ft"]) == pytest.approx(float(ft), rel=1e-5)
    onehot_np = torch.nn.functional.one_hot(kw["np_target"], 2).permute(0, 3, 1, 2).float()
    mean_true = float((out["np"].softmax(1) * onehot_np).sum(1).mean())
    assert float(res.terms["np_ft"]) == pytest.approx((1 - mean_true) ** (4 / 3), rel=1e-4)


def test_batched_targets_feed_the_loss() -> None:
    inst = random_instances(4, size=32, n=6)
    tiles = [build_targets(inst, type_map_from_instances(inst, {i: 1 for i in range(300)}))] * 2
    kw = L.batch_targets(tiles)
    assert kw["np_target"].dtype == torch.long and tuple(kw["sets"].shape) == (2, 32, 32)
    out = {"np": torch.zeros(2, 2, 32, 32), "hv": torch.zeros(2, 2, 32, 32),
           "tp": torch.zeros(2, 3, 32, 32)}  # fmt: skip
    res = L.CellViTLoss()(out, **kw)
    # uniform NT logits: cross-entropy is log(3) on every pixel
    assert float(res.terms["nt_ce"]) == pytest.approx(math.log(3), rel=1e-5)
    assert float(res.terms["hv_mse"]) == pytest.approx(float((kw["hv_target"] ** 2).mean()))
