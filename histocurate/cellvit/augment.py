"""CellViT's training augmentations (albumentations 2, on the CPU, in loader workers).

In CellViT's order, with its probabilities (its albumentations 1.3 parameters translated
to 2.x names):

- RandomRotate90 0.5, HorizontalFlip 0.5, VerticalFlip 0.5;
- Downscale 0.15 (x0.5), Blur 0.2 (kernel 3-9: 2.x wants odd sizes), GaussNoise 0.25
  (variance up to 50 on 0-255, i.e. std up to sqrt(50)/255);
- ColorJitter 0.2 (0.25, 0.25, 0.1, 0.05), Superpixels 0.1 (10% of 200 segments, at half
  the tile size), ZoomBlur 0.1 (up to 1.05);
- RandomSizedCrop 0.1 (side S/2..S, back to S), ElasticTransform 0.2 (alpha 0.5, sigma 25;
  2.x has no affine part).

The instance, type and label-set maps travel as one integer mask: geometric transforms
move them with nearest-neighbour sampling (ids are never blended); pixel transforms touch
the image only. The targets are rebuilt from the moved instance map
(`histocurate.cellvit.targets.build_targets`), as CellViT does. Normalisation is not part
of it: tiles stay ``uint8`` to the device (`CellViT.normalise`).

Chosen over kornia by measured throughput (``benchmarks/cellvit_augment.py``, one core,
448 px): albumentations runs the full set; kornia has no Superpixels, ZoomBlur or
Downscale, and on the CPU its subset is slower still.

>>> aug = CellViTAugment(AugmentConfig(tile_size=64))
>>> image = np.zeros((64, 64, 3), np.uint8); inst = np.zeros((64, 64), np.int32)
>>> inst[10:20, 10:20] = 3
>>> out = aug(image, inst, (inst > 0).astype(np.uint8) * 2, seed=1)
>>> sorted(np.unique(out.inst_map).tolist()), out.image.shape
([0, 3], (64, 64, 3))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from histocurate.cellvit.targets import Targets, build_targets


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Probabilities of each transform (CellViT's by default) and the tile size."""

    tile_size: int = 448
    p_rotate90: float = 0.5
    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_downscale: float = 0.15
    p_blur: float = 0.2
    p_noise: float = 0.25
    p_color: float = 0.2
    p_superpixels: float = 0.1
    p_zoom_blur: float = 0.1
    p_crop: float = 0.1
    p_elastic: float = 0.2
    superpixel_max_size: int | None = None  # CellViT: tile_size // 2 (the costly one)


@dataclass(frozen=True, slots=True)
class AugmentedTile:
    image: np.ndarray
    inst_map: np.ndarray
    type_map: np.ndarray
    set_map: np.ndarray

    def targets(self) -> Targets:
        """NP / HV / NT targets of the augmented maps."""
        return build_targets(self.inst_map, self.type_map, self.set_map)


def build_pipeline(config: AugmentConfig) -> Any:
    """The albumentations ``Compose`` of CellViT's transforms."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import asks PyPI otherwise
    import albumentations as A

    s = config.tile_size
    return A.Compose(
        [
            A.RandomRotate90(p=config.p_rotate90),
            A.HorizontalFlip(p=config.p_hflip),
            A.VerticalFlip(p=config.p_vflip),
            A.Downscale(scale_range=(0.5, 0.5), p=config.p_downscale),
            A.Blur(blur_limit=(3, 9), p=config.p_blur),
            A.GaussNoise(std_range=(0.0, 50**0.5 / 255), p=config.p_noise),
            A.ColorJitter(
                brightness=0.25, contrast=0.25, saturation=0.1, hue=0.05, p=config.p_color
            ),
            A.Superpixels(
                p_replace=(0.1, 0.1),
                n_segments=(200, 200),
                max_size=config.superpixel_max_size or s // 2,
                p=config.p_superpixels,
            ),
            A.ZoomBlur(max_factor=(1.0, 1.05), p=config.p_zoom_blur),
            A.RandomSizedCrop(min_max_height=(s // 2, s), size=(s, s), p=config.p_crop),
            A.ElasticTransform(alpha=0.5, sigma=25, p=config.p_elastic),
        ]
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """One seed per (run seed, epoch, dataset index): the same augmentation whatever the
    worker, the rank or a resume.

    >>> sample_seed(111, 0, 5) == sample_seed(111, 0, 5) != sample_seed(111, 1, 5)
    True
    """
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class CellViTAugment:
    """Callable: (RGB uint8 tile, instance map, type map, optional label-set map) ->
    `AugmentedTile`; pass ``seed`` (e.g. `sample_seed`) for reproducible draws."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()
        self.pipeline = build_pipeline(self.config)

    def __call__(
        self,
        image: np.ndarray,
        inst_map: np.ndarray,
        type_map: np.ndarray,
        set_map: np.ndarray | None = None,
        *,
        seed: int | None = None,
    ) -> AugmentedTile:
        size = self.config.tile_size
        if image.shape != (size, size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 tile ({size}, {size}, 3), got "
                             f"{image.dtype} {image.shape}")  # fmt: skip
        if inst_map.shape != (size, size) or type_map.shape != (size, size):
            raise ValueError(f"maps must be ({size}, {size})")
        sets = np.zeros((size, size), np.int32) if set_map is None else set_map
        mask = np.stack([inst_map, type_map, sets], axis=-1).astype(np.int32)
        if seed is not None:
            self.pipeline.set_random_seed(seed)
        out = self.pipeline(image=np.ascontiguousarray(image), mask=mask)
        moved = out["mask"]
        return AugmentedTile(
            image=out["image"],
            inst_map=np.ascontiguousarray(moved[..., 0]),
            type_map=np.ascontiguousarray(moved[..., 1]).astype(np.uint8),
            set_map=np.ascontiguousarray(moved[..., 2]),
        )
