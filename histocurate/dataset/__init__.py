"""Curated datasets: a campaign's annotations as versioned, checked, documented Parquet
datasets (HistoTRAIN / HistoVAL style), their exchange formats and a training reader.

Layout of one version (``datasets/<name>/<version>/`` in the workspace)::

    tiles.parquet             one row (and one row group) per tile: image, instance map,
                              type map (PNG bytes), fold, arm, counts (table dataset_tiles)
    nuclei.parquet            one row per nucleus: id in the instance map, centroid, bbox,
                              polygon, label / label set, annotators (table dataset_nuclei)
    dataset.json              name, version, content hash, classes, mpp, folds, provenance
    card.md                   the dataset card (counts, Table 1, folds, annotators)
    class_distribution.png    nuclei per cell type and indication (stacked bars)

Entry points (imported lazily, so that ``data_schema`` can import `classes` cheaply):

- `run_dataset_build` (`histocurate.dataset.build`): the stage;
- `NucleiDataset` (`histocurate.dataset.reader`): the map-style torch Dataset;
- `resolve_dataset` / `list_datasets` (`histocurate.dataset.store`): versions;
- `histocurate.dataset.formats`: PanNuke, CoNSeP and Lizard importers, PanNuke and
  GeoJSON exporters.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.reader import NucleiDataset
    from histocurate.dataset.run import DatasetRun
    from histocurate.dataset.store import DatasetVersion, list_datasets, resolve_dataset

_WHERE = {
    "DatasetRun": "run",
    "run_dataset_build": "build",
    "NucleiDataset": "reader",
    "DatasetVersion": "store",
    "list_datasets": "store",
    "resolve_dataset": "store",
}

__all__ = [
    "DatasetRun",
    "DatasetVersion",
    "NucleiDataset",
    "list_datasets",
    "resolve_dataset",
    "run_dataset_build",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'histocurate.dataset' has no attribute {name!r}")
    return getattr(importlib.import_module(f"histocurate.dataset.{module}"), name)
