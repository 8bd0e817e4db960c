"""Synthetic tile features with known rare-cell presence, for tests and benchmarks.

Each tile belongs to one of a few tissue patterns (a centre in feature space); each slide
and each cohort adds its own shift (stain, scanner), which the per-slide / per-cohort
scalers are meant to remove. A rare type is present with a probability that depends on the
pattern (rare types gather in some tissue) and, when present, moves the tile along the
type's own direction. Everything is a function of (seed, slide id): slides can be made one
at a time, in any order, on any process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from histocurate.labels import RARE_LABELS
from histocurate.seeding import rng_for
from histocurate.selection.sources import SlideFeatures, align


@dataclass(frozen=True)
class SyntheticCohort:
    """A synthetic cohort of ``n_slides`` slides x ``tiles_per_slide`` tiles x ``dim``."""

    n_slides: int = 8
    tiles_per_slide: int = 200
    dim: int = 32
    n_cohorts: int = 2
    indications: tuple[str, ...] = ("LUAD",)
    types: tuple[str, ...] = RARE_LABELS
    n_patterns: int = 6
    signal: float = 1.5  # shift along a type's direction when present
    slide_shift: float = 0.5
    cohort_shift: float = 1.0
    seed: int = 0
    encoders: tuple[str, ...] = ("synthetic",)
    second_dim: int | None = None  # dimension of the other encoders' views (default: dim)

    @property
    def slide_ids(self) -> list[str]:
        return [f"S{i:04d}" for i in range(self.n_slides)]

    def slides(self) -> pd.DataFrame:
        """slide_id, cohort, indication, n_tiles."""
        ids = self.slide_ids
        return pd.DataFrame(
            {
                "slide_id": ids,
                "cohort": [f"C{i % self.n_cohorts}" for i in range(len(ids))],
                "indication": [
                    self.indications[i % len(self.indications)] for i in range(len(ids))
                ],
                "n_tiles": self.tiles_per_slide,
            }
        )

    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = rng_for(self.seed, "basis")
        centres = rng.normal(0, 1.0, (self.n_patterns, self.dim)).astype(np.float32)
        directions = rng.normal(0, 1.0, (len(self.types), self.dim)).astype(np.float32)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        # P(type present | pattern): each type favours one or two patterns
        base = rng.uniform(0.005, 0.03, (self.n_patterns, len(self.types)))
        for t in range(len(self.types)):
            base[rng.choice(self.n_patterns, 2, replace=False), t] = rng.uniform(0.15, 0.4, 2)
        return centres, directions, base

    def slide(self, slide_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tile ids, features (n, dim, float32 per encoder 0), presence (n, T) bool)."""
        centres, directions, base = self._basis()
        index = self.slide_ids.index(slide_id)
        cohort = index % self.n_cohorts
        rng = rng_for(self.seed, "slide", slide_id)
        n = self.tiles_per_slide
        pattern = rng.integers(self.n_patterns, size=n)
        presence = rng.random((n, len(self.types))) < base[pattern]
        noise = rng.standard_normal((n, self.dim), dtype=np.float32)
        shift = (
            rng_for(self.seed, "cohort", cohort).normal(0, self.cohort_shift, self.dim)
            + rng.normal(0, self.slide_shift, self.dim)
        ).astype(np.float32)
        values = centres[pattern] + noise + shift + self.signal * (presence @ directions)
        ids = np.array([f"{slide_id}_t{i:05d}" for i in range(n)])
        return ids, values.astype(np.float32), presence

    def labels(self, slide_ids: Sequence[str], *, per_slide: int | None = None) -> pd.DataFrame:
        """Presence labels of tiles of ``slide_ids`` (all tiles, or the first ``per_slide``):
        tile_id, slide_id and one bool column per type."""
        frames = []
        for s in slide_ids:
            ids, _, presence = self.slide(s)
            k = len(ids) if per_slide is None else per_slide
            frame = pd.DataFrame(presence[:k], columns=list(self.types))
            frame.insert(0, "slide_id", s)
            frame.insert(0, "tile_id", ids[:k])
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


@functools.cache
def _rotation(seed: int, encoder: str, dim: int, out_dim: int) -> np.ndarray:
    rng = rng_for(seed, "view", encoder)
    return np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :out_dim].astype(np.float32)


@dataclass(frozen=True)
class SyntheticFeatures:
    """A `FeatureSource` making a `SyntheticCohort`'s features on the fly.

    A second encoder, when asked, sees the same tiles through a fixed random rotation plus
    extra noise (a weaker view of the same content).
    """

    cohort: SyntheticCohort

    @property
    def encoders(self) -> tuple[str, ...]:
        return self.cohort.encoders

    def load(self, slide_id: str) -> SlideFeatures:
        ids, values, _ = self.cohort.slide(slide_id)
        out = {self.encoders[0]: (ids, values)}
        dim = self.cohort.dim
        second = self.cohort.second_dim or dim
        for k, enc in enumerate(self.encoders[1:], start=1):
            view = values @ _rotation(self.cohort.seed, enc, dim, second)
            noise = rng_for(self.cohort.seed, "view-noise", enc, slide_id).standard_normal(
                view.shape, dtype=np.float32
            )
            out[enc] = (ids, (view + 0.5 * k * noise).astype(np.float32))
        return align(slide_id, out)
