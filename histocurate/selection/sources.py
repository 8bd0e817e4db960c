"""Where selection gets tile features and presence labels from.

The arms only need, per slide, the tile ids and one float32 matrix per encoder
(`SlideFeatures`). A `FeatureSource` gives them one slide at a time, so that a run over
millions of tiles holds a few slides in memory, never the cohort. `WorkspaceFeatures` reads
the features stage's files; `ArrayFeatures` serves arrays (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from histocurate.errors import UserInputError
from histocurate.workspace import Workspace


@dataclass
class SlideFeatures:
    """One slide's tiles (sorted by id) and their features, one matrix per encoder."""

    slide_id: str
    tile_ids: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.tile_ids)


class FeatureSource(Protocol):
    """Gives the features of one slide for every encoder of ``encoders``."""

    encoders: tuple[str, ...]

    def load(self, slide_id: str) -> SlideFeatures: ...


def align(slide_id: str, per_encoder: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> SlideFeatures:
    """Tiles present for every encoder, sorted by id; refuses NaN or infinite features."""
    common: np.ndarray | None = None
    for ids, _ in per_encoder.values():
        ids = np.asarray(ids).astype(str)
        common = ids if common is None else np.intersect1d(common, ids)
    common = np.unique(common if common is not None else np.zeros(0, str))
    values = {}
    for encoder, (ids, vals) in per_encoder.items():
        ids = np.asarray(ids).astype(str)
        if np.ndim(vals) != 2 or len(vals) != len(ids):
            raise UserInputError(
                f"features of {encoder!r} for slide {slide_id}: {len(ids)} tile ids but "
                f"values of shape {np.shape(vals)} (one row per tile expected)"
            )
        order = np.argsort(ids, kind="stable")
        if len(np.unique(ids)) != len(ids):
            raise UserInputError(
                f"features of {encoder!r} for slide {slide_id}: duplicate tile ids"
            )
        rows = order[np.searchsorted(ids[order], common)]
        matrix = np.ascontiguousarray(np.asarray(vals)[rows], dtype=np.float32)
        bad = ~np.isfinite(matrix).all(axis=1)
        if bad.any():
            raise UserInputError(
                f"features of {encoder!r} for slide {slide_id}: {int(bad.sum())} tile(s) have "
                f"NaN or infinite values (first: {common[np.flatnonzero(bad)[0]]}); "
                f"re-run `histocurate embed --encoder {encoder}` for this slide"
            )
        values[encoder] = matrix
    return SlideFeatures(slide_id, common, values)


@dataclass
class ArrayFeatures:
    """Features held in memory: ``data[slide_id][encoder] = (tile_ids, values)``."""

    data: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]
    encoders: tuple[str, ...]

    def load(self, slide_id: str) -> SlideFeatures:
        found = self.data.get(slide_id, {})
        missing = [e for e in self.encoders if e not in found]
        if missing:
            raise UserInputError(f"no {missing} features for slide {slide_id}")
        return align(slide_id, {e: found[e] for e in self.encoders})


@dataclass
class WorkspaceFeatures:
    """Features written by `histocurate embed` (read with `histocurate.features.load_features`)."""

    root: Path
    encoders: tuple[str, ...]

    def load(self, slide_id: str) -> SlideFeatures:
        from histocurate.features import load_features

        ws = Workspace(self.root)
        per_encoder = {}
        for encoder in self.encoders:
            matrix = load_features(ws, encoder, slide_ids=[slide_id])
            per_encoder[encoder] = (np.asarray(matrix.tile_ids).astype(str), matrix.values)
        return align(slide_id, per_encoder)


def encoders_with_features(workspace: Workspace, slide_ids: Sequence[str]) -> list[str]:
    """Encoder folders under ``features/`` holding a file for at least one of ``slide_ids``."""
    root = workspace.root / "features"
    if not root.is_dir():
        return []
    wanted = set(slide_ids)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(p.stem in wanted for p in folder.glob("*.parquet")):
            found.append(folder.name)
    return found
