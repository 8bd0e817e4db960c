"""Training data: images with instance maps, read from CoNSeP, PanNuke or a masks table,
and the patch dataset that turns each nucleus into one training example.

Clicks mimic people: the inclusion click is a random pixel of the nucleus core (inside a
distance-transform threshold); exclusion clicks are the centroids of the other nuclei in
the patch with +-3 px uniform jitter, a random fraction (up to half) of them dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from nuclick.errors import NuClickError
from nuclick.guidance import PAD_VALUE, patch_origins

# Loss weights: background 1, the target nucleus 2, the other nuclei 4 (public recipe).
WEIGHT_BACKGROUND, WEIGHT_TARGET, WEIGHT_OTHERS = 1.0, 2.0, 4.0


@dataclass
class InstanceSample:
    """One RGB image (H, W, 3) uint8 with its instance map (H, W) int (0 = background)."""

    image: np.ndarray
    inst_map: np.ndarray
    name: str = ""


def load_consep(root: str | Path) -> list[InstanceSample]:
    """CoNSeP layout: ``Images/*.png`` beside ``Labels/*.mat`` (``inst_map``); 0.25 um/px.

    JPEG and TIFF images (``.jpg``, ``.tif``) are read too.
    """
    from scipy.io import loadmat
    from skimage.io import imread

    root = Path(root)
    images = sorted(
        p
        for p in (root / "Images").glob("*")
        if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif"}
    )
    if not images:
        raise NuClickError(f"{root}: no Images/*.png (expected the CoNSeP layout)")
    samples = []
    for path in images:
        label = root / "Labels" / f"{path.stem}.mat"
        if not label.is_file():
            raise NuClickError(f"{label}: missing label file for {path.name}")
        mat = loadmat(label)
        if "inst_map" not in mat:
            raise NuClickError(f"{label}: no 'inst_map' variable (found {sorted(mat)})")
        image = imread(path)[..., :3]
        samples.append(
            InstanceSample(image.astype(np.uint8), mat["inst_map"].astype(np.int32), path.stem)
        )
    return samples


def load_pannuke(folder: str | Path) -> list[InstanceSample]:
    """PanNuke layout: ``images.npy`` (N, 256, 256, 3) and ``masks.npy`` (N, 256, 256, 6).

    Channels 0-4 of the masks hold instance ids per cell class, channel 5 the background;
    ids are made unique per image across the classes.
    """
    folder = Path(folder)
    paths = [folder / "images.npy", folder / "masks.npy"]
    for path in paths:
        if not path.is_file():
            raise NuClickError(f"{path}: not found (expected the PanNuke layout)")
    images = np.load(paths[0], mmap_mode="r")
    masks = np.load(paths[1], mmap_mode="r")
    if images.shape[:3] != masks.shape[:3] or masks.ndim != 4:
        raise NuClickError(f"{folder}: images {images.shape} and masks {masks.shape} do not match")
    samples = []
    for k in range(len(images)):
        inst = np.zeros(masks.shape[1:3], dtype=np.int32)
        next_id = 1
        for ch in range(min(5, masks.shape[3])):
            chan = np.asarray(masks[k, :, :, ch]).astype(np.int64)
            for value in np.unique(chan[chan > 0]):
                inst[(chan == value) & (inst == 0)] = next_id
                next_id += 1
        samples.append(InstanceSample(np.asarray(images[k]).astype(np.uint8), inst, f"pannuke_{k}"))
    return samples


def rasterize_polygons(polygons: Iterable[bytes], shape: tuple[int, int]) -> np.ndarray:
    """Instance map from WKB outlines (x, y pixel-edge coords; pixel centres inside), with
    the project's one rasteriser: (multi)polygons and holes drawn, overlapping pixels to
    the smaller nucleus (it would vanish otherwise)."""
    from histocurate.geometry.raster import rasterize

    return rasterize(list(polygons), shape=shape)


def load_masks_table(
    table: object, load_image: Callable[[str], np.ndarray]
) -> list[InstanceSample]:
    """Samples from a masks table (a DataFrame with ``tile_id`` and WKB ``polygon``).

    ``load_image(tile_id)`` returns the tile's RGB pixels. Give one annotator's (or the
    consensus') masks per tile: every polygon becomes one nucleus.
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame) or not {"tile_id", "polygon"} <= set(table.columns):
        raise NuClickError("a masks table needs the columns 'tile_id' and 'polygon' (WKB)")
    samples = []
    for tile_id, rows in table.groupby("tile_id", sort=True):
        image = np.asarray(load_image(str(tile_id)))
        inst = rasterize_polygons(rows["polygon"], image.shape[:2])
        samples.append(InstanceSample(image[..., :3].astype(np.uint8), inst, str(tile_id)))
    return samples


def _color_jitter(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and per-channel (stain-like) scaling; float in [0, 1]."""
    out = patch * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-0.06, 0.06)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.85, 1.15) + mean
    return np.clip(out, 0.0, 1.0)


class NuclickPatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """One item per nucleus: (input (5, P, P), target (1, P, P), loss weights (1, P, P)).

    ``augment`` adds flips, 90-degree turns and colour jitter; without it the click and
    exclusion drops still vary, seeded by ``seed`` and the item (validation is fixed).
    """

    def __init__(
        self,
        samples: list[InstanceSample],
        *,
        patch_size: int = 128,
        augment: bool = True,
        min_area: int = 12,
        core_fraction: float = 0.5,
        jitter: float = 3.0,
        max_drop: float = 0.5,
        seed: int = 0,
    ) -> None:
        if patch_size % 32:
            raise NuClickError(f"patch_size must be a multiple of 32, got {patch_size}")
        self.samples = samples
        self.patch_size = patch_size
        self.augment = augment
        self.core_fraction = core_fraction
        self.jitter = jitter
        self.max_drop = max_drop
        self.seed = seed
        self.epoch = 0
        self.index: list[tuple[int, int]] = []
        self.centroids: list[np.ndarray] = []
        self.boxes: list[list[tuple[slice, slice] | None]] = []
        for s, sample in enumerate(samples):
            inst = sample.inst_map
            ids = np.arange(1, int(inst.max()) + 1)
            if len(ids) == 0:
                self.centroids.append(np.zeros((0, 2)))
                self.boxes.append([])
                continue
            areas = ndi.sum_labels(np.ones_like(inst), inst, ids)
            cents = np.asarray(ndi.center_of_mass(np.ones_like(inst), inst, ids), dtype=np.float64)
            self.centroids.append(np.nan_to_num(cents, nan=-1e6).reshape(-1, 2))
            self.boxes.append(list(ndi.find_objects(inst)))
            self.index.extend((s, int(i)) for i, a in zip(ids, areas, strict=True) if a >= min_area)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """New clicks and augmentations each epoch (also across DataLoader workers)."""
        self.epoch = epoch

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch if self.augment else 0, item))
        s, nid = self.index[item]
        sample = self.samples[s]
        inst = sample.inst_map
        box = self.boxes[s][nid - 1]
        assert box is not None
        own = inst[box] == nid
        dist = ndi.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1]
        core = dist >= max(1.0, self.core_fraction * dist.max())
        rows, cols = np.nonzero(core)
        k = rng.integers(len(rows))
        click = np.array([rows[k] + box[0].start, cols[k] + box[1].start])
        p = self.patch_size
        height, width = inst.shape
        r0, c0 = patch_origins(click[None], (height, width), p)[0]
        image = np.full((p, p, 3), PAD_VALUE, dtype=np.uint8)
        labels = np.zeros((p, p), dtype=np.int64)
        crop_h, crop_w = min(p, height - r0), min(p, width - c0)
        image[:crop_h, :crop_w] = sample.image[r0 : r0 + crop_h, c0 : c0 + crop_w]
        labels[:crop_h, :crop_w] = inst[r0 : r0 + crop_h, c0 : c0 + crop_w]
        guidance = np.zeros((2, p, p), dtype=np.float32)
        guidance[0, click[0] - r0, click[1] - c0] = 1.0
        others = np.delete(self.centroids[s], nid - 1, axis=0) - (r0, c0)
        others = others + rng.uniform(-self.jitter, self.jitter, others.shape)
        others = np.rint(others).astype(np.int64)
        inside = ((others >= 0) & (others < p)).all(axis=1)
        others = others[inside]
        keep = rng.random(len(others)) >= rng.uniform(0, self.max_drop)
        others = others[keep]
        guidance[1, others[:, 0], others[:, 1]] = 1.0
        target = (labels == nid).astype(np.float32)
        weights = np.where(labels == 0, WEIGHT_BACKGROUND, WEIGHT_OTHERS).astype(np.float32)
        weights[target > 0] = WEIGHT_TARGET
        rgb = image.astype(np.float32) / 255.0
        if self.augment:
            rgb = _color_jitter(rgb, rng)
        planes = np.concatenate([rgb.transpose(2, 0, 1), guidance, target[None], weights[None]])
        if self.augment:
            planes = np.rot90(planes, k=int(rng.integers(4)), axes=(1, 2))
            if rng.random() < 0.5:
                planes = planes[:, :, ::-1]
        planes = np.ascontiguousarray(planes, dtype=np.float32)
        tensor = torch.from_numpy(planes)
        return tensor[:5], tensor[5:6], tensor[6:7]
