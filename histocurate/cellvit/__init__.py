"""CellViT / HistoPLUS: model, targets, losses, sampling, augmentation, checkpoints, the
training loop and the HoVer post-processing (pure model code: no pipeline stage is
imported; the pipeline passes in the dataset and the metric functions).

Main entry points (loaded lazily, so that importing the package is cheap):

- `build_model` / `CellViTConfig` (`histocurate.cellvit.model`);
- `load_checkpoint` / `save_checkpoint` (`histocurate.cellvit.checkpoint`): our checkpoints
  and bare HistoPLUS state dicts;
- `histocurate.cellvit.targets.build_targets`, `histocurate.cellvit.targets.hv_maps`;
- `CellViTLoss` (`histocurate.cellvit.losses`);
- `histocurate.cellvit.sampling.sample_weights`, `DistributedWeightedSampler`;
- `histocurate.cellvit.augment.CellViTAugment`;
- `histocurate.cellvit.postprocess.instances_from_maps`;
- the training loop: `preset` / `TrainSettings` (`presets`), `Trainer` (`train`; one step
  in `stepper`), `distributed` (torchrun), `validate`, `rundir` (runs/<run>/: checkpoints,
  metrics, curves), `loader`, `guards` (NaN, out of memory), `finetune` (class mapping).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histocurate.cellvit.checkpoint import (
        CheckpointError,
        CheckpointInfo,
        load_checkpoint,
        save_checkpoint,
    )
    from histocurate.cellvit.losses import CellViTLoss, LossWeights
    from histocurate.cellvit.model import CellViT, CellViTConfig, build_model
    from histocurate.cellvit.presets import TrainSettings, preset
    from histocurate.cellvit.train import Trainer

_WHERE = {
    "CheckpointError": "checkpoint",
    "CheckpointInfo": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "CellViTLoss": "losses",
    "LossWeights": "losses",
    "CellViT": "model",
    "CellViTConfig": "model",
    "build_model": "model",
    "TrainSettings": "presets",
    "preset": "presets",
    "Trainer": "train",
}

__all__ = [
    "CellViT",
    "CellViTConfig",
    "CellViTLoss",
    "CheckpointError",
    "CheckpointInfo",
    "LossWeights",
    "TrainSettings",
    "Trainer",
    "build_model",
    "load_checkpoint",
    "preset",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'histocurate.cellvit' has no attribute {name!r}")
    return getattr(importlib.import_module(f"histocurate.cellvit.{module}"), name)
