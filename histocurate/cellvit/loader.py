"""What the training loop reads: a dataset's tiles as model inputs and targets.

The base dataset is any map-style dataset whose items are dicts with ``image`` (uint8
H x W x 3), ``inst_map``, ``type_map`` (dataset class values, 255 undetermined), optionally
``set_map`` (label-set bitmasks in dataset class values) and ``tile_id``
(`histocurate.dataset.NucleiDataset` is one). `ClassMap` turns the dataset's class values
into the model's channels (1..n, in the order of the model's classes).

`TrainTiles` is indexed by the draws of `histocurate.cellvit.distributed.StepBatches`
(epoch, position, index): a random crop to the input size when the tiles are larger, then
CellViT's augmentations, both seeded by (run seed, epoch, position), so that a tile's
draw is the same whatever the worker, the rank or a resume; the targets are built after.

>>> cm = ClassMap.of([1, 4])
>>> cm.types(np.array([0, 1, 4, 255, 7])).tolist()
[0, 1, 2, 255, 255]
>>> cm.bits(np.array([(1 << 1) | (1 << 4), 1 << 7])).tolist()
[6, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from histocurate.cellvit.augment import AugmentConfig, CellViTAugment, sample_seed
from histocurate.cellvit.distributed import Draw
from histocurate.cellvit.losses import batch_targets
from histocurate.cellvit.targets import IGNORE_TYPE, build_targets


@dataclass(frozen=True)
class ClassMap:
    """Dataset class values -> model channels (channel k = the k-th class, 1-based)."""

    values: tuple[int, ...]  # dataset class value of channel 1, 2, ...

    @classmethod
    def of(cls, values: Sequence[int]) -> ClassMap:
        found = tuple(int(v) for v in values)
        if len(set(found)) != len(found) or any(not 0 < v < IGNORE_TYPE for v in found):
            raise ValueError(f"class values must be distinct, in 1..254: {found}")
        return cls(found)

    def lut(self) -> np.ndarray:
        table = np.full(256, IGNORE_TYPE, dtype=np.uint8)
        table[0] = 0
        for channel, value in enumerate(self.values, start=1):
            table[value] = channel
        return table

    def types(self, type_map: np.ndarray) -> np.ndarray:
        """A type map in model channels (unknown values: ignored)."""
        return self.lut()[np.asarray(type_map, dtype=np.uint8)]

    def bits(self, set_map: np.ndarray) -> np.ndarray:
        """Label-set bitmasks moved from dataset values to model channels."""
        sets = np.asarray(set_map, dtype=np.int64)
        out = np.zeros(sets.shape, dtype=np.int64)
        for channel, value in enumerate(self.values, start=1):
            out |= ((sets >> value) & 1) << channel
        return out.astype(np.int32)


def crop_origin(height: int, width: int, out: int, seed: int) -> tuple[int, int]:
    """(row, col) of a random ``out`` x ``out`` crop of a tile ((0, 0) when it fits)."""
    if height == width == out:
        return 0, 0
    rng = np.random.default_rng(seed)
    return int(rng.integers(0, height - out + 1)), int(rng.integers(0, width - out + 1))


class TrainTiles(Dataset[dict[str, Any]]):
    """Model inputs and targets for `StepBatches` draws (module docstring)."""

    def __init__(
        self,
        base: Dataset[dict[str, Any]],
        classes: ClassMap,
        *,
        input_size: int,
        seed: int,
        augment: AugmentConfig | None,
        label_sets: bool = False,
    ) -> None:
        self.base, self.classes = base, classes
        self.input_size, self.seed = input_size, seed
        self.augment_config, self.label_sets = augment, label_sets
        self._augment: CellViTAugment | None = None  # built in the worker that uses it

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, draw: Draw) -> dict[str, Any]:
        epoch, position, index = draw
        seed = sample_seed(self.seed, epoch, position)
        item = self.base[index]
        image, inst = item["image"], np.asarray(item["inst_map"], dtype=np.int32)
        types = self.classes.types(item["type_map"])
        sets = None
        if self.label_sets and item.get("set_map") is not None:
            sets = self.classes.bits(item["set_map"])
        s = self.input_size
        if image.shape[0] < s or image.shape[1] < s:
            raise ValueError(f"tile {item.get('tile_id')}: {image.shape[:2]} < input {s} px")
        r, c = crop_origin(image.shape[0], image.shape[1], s, seed)
        box = slice(r, r + s), slice(c, c + s)
        image, inst, types = np.ascontiguousarray(image[box]), inst[box], types[box]
        sets = None if sets is None else sets[box]
        if self.augment_config is not None:
            if self._augment is None:
                self._augment = CellViTAugment(self.augment_config)
            moved = self._augment(image, inst, types, sets, seed=seed)
            image, inst, types = moved.image, moved.inst_map, moved.type_map
            sets = moved.set_map if sets is not None else None
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "targets": build_targets(inst, types, sets),
            "tile_id": str(item.get("tile_id", index)),
            "position": position,
        }


@dataclass
class Batch:
    """A micro-batch: uint8 images (B, 3, S, S), the loss's target tensors, tile ids."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    tile_ids: list[str]
    positions: list[int]

    def pin_memory(self) -> Batch:
        self.images = self.images.pin_memory()
        self.targets = {k: v.pin_memory() for k, v in self.targets.items()}
        return self

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.targets.items()},
            self.tile_ids,
            self.positions,
        )


def collate(items: Sequence[dict[str, Any]]) -> Batch:
    """Stack `TrainTiles` items into a `Batch`."""
    return Batch(
        images=torch.stack([i["image"] for i in items]),
        targets=batch_targets([i["targets"] for i in items]),
        tile_ids=[i["tile_id"] for i in items],
        positions=[int(i["position"]) for i in items],
    )
