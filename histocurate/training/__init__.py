"""The train stage (pipeline side): a curated dataset of the workspace -> runs/<run>/.

`run_train` (`histocurate.training.stage`) resolves ``NAME[@VERSION]``, the folds, the
preset and the run folders, then calls the training loop of `histocurate.cellvit.train`
with the dataset (`histocurate.dataset.NucleiDataset`) and the project's metrics
(`histocurate.training.metrics.ProjectMetrics`). The CLI (`histocurate train`) and the
Prefect flow (`flows/train.py`) only wire it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histocurate.training.stage import TrainRun, run_train

__all__ = ["TrainRun", "run_train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("histocurate.training.stage"), name)
    raise AttributeError(f"module 'histocurate.training' has no attribute {name!r}")
