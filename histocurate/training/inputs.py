"""What a training run reads: the dataset version, its folds and classes, the model input
size and the oversampling weights of the training folds.

The weights are CellViT's (gamma 0.85) from the training folds' own class counts, with the
indication in the role of CellViT's tissue (``cell+tissue``: each factor scaled to a
maximum of 1, then added).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histocurate.cellvit.loader import ClassMap
from histocurate.cellvit.presets import TrainSettings
from histocurate.cellvit.rundir import CheckpointMeta
from histocurate.cellvit.sampling import combined_weights, group_weights, sample_weights
from histocurate.cellvit.train import TrainData
from histocurate.config import HistocurateConfig
from histocurate.dataset import NucleiDataset
from histocurate.dataset.store import DatasetVersion, datasets_root, resolve_dataset
from histocurate.errors import UserInputError


@dataclass(frozen=True)
class DatasetChoice:
    """A resolved dataset version and what training needs from its dataset.json."""

    name: str
    version: str
    path: Path
    content_hash: str
    folds: tuple[int, ...]
    classes: tuple[dict[str, Any], ...]
    mpp: float
    tile_size: int | None

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def class_ids(self) -> tuple[str, ...]:
        return tuple(str(c["id"]) for c in self.classes)

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(str(c.get("color", "#808080")) for c in self.classes)

    def record(self) -> dict[str, Any]:
        """For config.json."""
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "content_hash": self.content_hash,
            "folds": list(self.folds),
            "mpp": self.mpp,
            "tile_size": self.tile_size,
        }


def resolve(config: HistocurateConfig, spec: str) -> DatasetChoice:
    """``NAME[@VERSION]`` in the workspace (errors name the versions that exist)."""
    found: DatasetVersion = resolve_dataset(datasets_root(config.workspace), spec)
    info = found.info()
    folds = info.get("folds") or {}
    slides = folds.get("slides") or {}
    fold_ids = tuple(sorted({int(f) for f in slides.values()})) or tuple(
        range(int(folds.get("n", 1)))
    )
    classes = tuple(info.get("classes") or ())
    if not classes:
        raise UserInputError(f"{found.info_path}: the dataset lists no classes")
    return DatasetChoice(
        name=found.name,
        version=found.version,
        path=found.path,
        content_hash=str(info.get("content_hash", "")),
        folds=fold_ids,
        classes=classes,
        mpp=float(info.get("mpp") or 0.25),
        tile_size=info.get("tile_size"),
    )


def validation_folds(choice: DatasetChoice, fold: int | None, cv: bool) -> list[int]:
    """The held-out fold of each run: ``[fold]``, or every fold with ``cv``."""
    if len(choice.folds) < 2:
        raise UserInputError(
            f"dataset {choice.spec} has {len(choice.folds)} fold: nothing to hold out for "
            f"validation; rebuild it with `histocurate dataset build --name {choice.name} "
            "--folds 3`"
        )
    if cv == (fold is not None):
        raise UserInputError("give either --fold K (the held-out fold) or --cv (every fold)")
    if cv:
        return list(choice.folds)
    if fold not in choice.folds:
        raise UserInputError(
            f"--fold {fold} is not a fold of dataset {choice.spec} (folds: "
            f"{', '.join(map(str, choice.folds))})"
        )
    assert fold is not None
    return [int(fold)]


def patch_of(settings: TrainSettings) -> int:
    """The patch size of the settings' encoder (without building it)."""
    if "patch_size" in settings.arch:
        return int(settings.arch["patch_size"])
    if settings.encoder == "h0-mini":
        return 14
    found = re.search(r"patch(\d+)", settings.encoder)
    return int(found.group(1)) if found else 16


def input_size(settings: TrainSettings, choice: DatasetChoice, tile: int, patch: int) -> int:
    """The model's input side: the settings' (or the tiles' side), at most the crop,
    rounded down to a multiple of the patch; tiles smaller than it are refused."""
    wanted = settings.tile_size or tile
    if settings.crop is not None:
        wanted = min(wanted, settings.crop, tile)
    wanted = wanted // patch * patch
    if wanted < patch or wanted % patch:
        raise UserInputError(f"input size {wanted} px is not a multiple of the patch {patch}")
    if tile < wanted:
        raise UserInputError(
            f"dataset {choice.spec} has tiles of {tile} px, smaller than the {wanted} px the "
            f"preset {settings.preset!r} trains on; use a dataset at its resolution or the "
            "tiny preset (it takes the dataset's tile size)"
        )
    return wanted


def smallest_side(dataset: NucleiDataset) -> int:
    return int(min(dataset.meta["width"].min(), dataset.meta["height"].min()))


def oversampling(settings: TrainSettings, dataset: NucleiDataset) -> np.ndarray:
    """CellViT's sample weights of the training tiles (uniform when gamma is None)."""
    if settings.oversampling_gamma is None:
        return np.ones(len(dataset))
    gamma = settings.oversampling_gamma
    cell = sample_weights(dataset.class_counts(), gamma=gamma)
    if not settings.indication_weights:
        return cell
    return combined_weights(cell, group_weights(list(dataset.meta["indication"]), gamma=gamma))


def train_data(
    settings: TrainSettings,
    choice: DatasetChoice,
    val_fold: int,
    *,
    patch: int,
    train_config: dict[str, Any],
) -> TrainData:
    """The training folds (all but ``val_fold``) and the held-out one, ready for the loop."""
    others = [f for f in choice.folds if f != val_fold]
    train = NucleiDataset(choice.path, folds=others, label_sets=settings.label_sets)
    val = NucleiDataset(choice.path, folds=[val_fold], label_sets=True)  # scored the same
    if len(train) == 0:
        raise UserInputError(f"dataset {choice.spec}: no training tile outside fold {val_fold}")
    size = input_size(settings, choice, smallest_side(train), patch)
    meta = CheckpointMeta(
        classes=choice.class_ids, mpp=choice.mpp, colours=choice.colours, train_config=train_config
    )
    return TrainData(
        train=train,
        val=val,
        weights=oversampling(settings, train),
        classes=ClassMap.of([int(c["index"]) for c in choice.classes]),
        meta=meta,
        input_size=size,
    )
