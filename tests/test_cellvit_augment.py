"""CellViT augmentation: maps move with the image (ids and types kept), pixel transforms
leave them alone, seeds reproduce, targets are rebuilt from the moved instance map."""

from __future__ import annotations

import numpy as np

from histocurate.cellvit.augment import AugmentConfig, CellViTAugment
from histocurate.cellvit.targets import hv_maps

SIZE = 64
NAMES = ("rotate90", "hflip", "vflip", "downscale", "blur", "noise", "color", "superpixels",
         "zoom_blur", "crop", "elastic")  # fmt: skip
NONE = {f"p_{k}": 0.0 for k in NAMES}


def _tile() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    inst = np.zeros((SIZE, SIZE), np.int32)
    rr, cc = np.indices(inst.shape)
    for i in range(1, 9):
        r, c = rng.uniform(8, SIZE - 8, 2)
        inst[((rr - r) / 5) ** 2 + ((cc - c) / 4) ** 2 <= 1] = i * 10
    type_of = np.zeros(81, np.uint8)
    type_of[10::10] = [1, 2, 3, 4, 5, 6, 7, 255]
    sets = np.where(inst == 80, 0b110, 0).astype(np.int32)
    return image, inst, type_of[inst], sets


def _augment(**probs: float) -> CellViTAugment:
    return CellViTAugment(AugmentConfig(tile_size=SIZE, **{**NONE, **probs}))


def test_flip_moves_image_and_every_map_exactly() -> None:
    image, inst, types, sets = _tile()
    out = _augment(p_hflip=1.0)(image, inst, types, sets, seed=0)
    assert np.array_equal(out.image, image[:, ::-1])
    assert np.array_equal(out.inst_map, inst[:, ::-1])
    assert np.array_equal(out.type_map, types[:, ::-1])
    assert np.array_equal(out.set_map, sets[:, ::-1])


def test_geometric_transforms_keep_ids_and_their_types() -> None:
    image, inst, types, sets = _tile()
    aug = _augment(p_rotate90=1.0, p_crop=1.0, p_elastic=1.0)
    lookup = np.zeros(81, np.int64)
    for i in np.unique(inst):
        lookup[i] = types[inst == i][0]
    for seed in range(4):
        out = aug(image, inst, types, sets, seed=seed)
        assert set(np.unique(out.inst_map)) <= set(np.unique(inst))
        assert np.array_equal(out.type_map, lookup[out.inst_map])  # types travel with ids
        assert np.array_equal(out.set_map == 0b110, out.inst_map == 80)
        assert out.image.shape == (SIZE, SIZE, 3)


def test_pixel_transforms_touch_the_image_only() -> None:
    image, inst, types, sets = _tile()
    aug = _augment(p_downscale=1.0, p_blur=1.0, p_noise=1.0, p_color=1.0, p_zoom_blur=1.0)
    out = aug(image, inst, types, sets, seed=3)
    assert np.array_equal(out.inst_map, inst) and np.array_equal(out.type_map, types)
    assert not np.array_equal(out.image, image)


def test_seeded_draws_repeat_and_targets_follow_the_moved_map() -> None:
    image, inst, types, sets = _tile()
    aug = CellViTAugment(AugmentConfig(tile_size=SIZE, p_superpixels=0.0))
    a = aug(image, inst, types, sets, seed=7)
    aug(image, inst, types, sets, seed=8)
    b = aug(image, inst, types, sets, seed=7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.inst_map, b.inst_map)
    targets = a.targets()
    np.testing.assert_array_equal(targets.hv_target, hv_maps(a.inst_map))
    assert np.array_equal(targets.np_target, (a.inst_map > 0).astype(np.uint8))
    assert np.all(targets.nt_target[a.inst_map == 80] == 255)
