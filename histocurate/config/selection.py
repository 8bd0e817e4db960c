"""[selection]: active-learning tile selection (`histocurate select`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from data_schema.selection import ARMS
from histocurate.config.base import Section
from histocurate.labels import RARE_LABELS

# The arms are one table, data_schema.selection.ARMS (the selection table's `arm` choices):
# the config's choices are derived from it (mypy sees a plain str).
if TYPE_CHECKING:
    SelectionArm = str
else:
    SelectionArm = Literal[ARMS]
ScalerName = Literal["global", "slide", "cohort"]
_SCALERS: tuple[ScalerName, ...] = ("global", "slide", "cohort")


class SelectionConfig(Section):
    """Active-learning tile selection (`histocurate select`): the three arms and the draws."""

    arms: list[SelectionArm] = Field(
        default_factory=lambda: list(ARMS),
        description="Arms to run: diversity, rare (rare-cell enrichment), uncertainty.",
    )
    encoders: list[str] = Field(
        default_factory=list,
        description="Feature sets for the presence models (1 or 2 encoders; the first also "
        "drives K-means). Empty: every encoder with features, at most two.",
    )
    labels: Path | None = Field(
        None,
        description="Annotations table (Parquet/CSV with tile_id, label) giving tile presence "
        "labels. None: consensus, then points, then the synthetic truth, whichever exists.",
    )
    rare_types: list[str] = Field(
        default_factory=lambda: list(RARE_LABELS),
        description="Types of the rare-cell enrichment arm (histocurate.labels ids).",
    )
    n_tiles: int = Field(50, ge=1, description="N0: tiles drawn from the diversity + rare pool.")
    n_uncertain: int = Field(50, ge=0, description="Tiles drawn from the uncertainty pool.")
    kmeans_clusters: int = Field(20, ge=1, description="K of the per-slide diversity K-means.")
    top_per_slide: int = Field(2, ge=1, description="Rare arm: best tiles kept per slide and type.")
    hidden_sizes: list[list[int]] = Field(
        default_factory=lambda: [[32], [32, 16]],
        description="Hidden layers of the MLP candidates (one entry per depth).",
    )
    scalers: list[ScalerName] = Field(
        default_factory=lambda: list(_SCALERS),
        min_length=1,
        description="Z-scoring candidates: fitted globally, per slide, per cohort.",
    )
    ensemble_members: int = Field(5, ge=2, description="Members of each final presence model.")
    epochs: int = Field(20, ge=1, description="Training epochs of each MLP.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate of the MLPs.")
    outer_folds: int = Field(3, ge=2, description="Outer folds of the nested CV (assessment).")
    inner_folds: int = Field(3, ge=2, description="Inner folds of the nested CV (model choice).")
    prob_threshold: float = Field(
        0.4, ge=0, le=1, description="Uncertainty arm: tiles need mean P(presence) above this."
    )
    bald_percentile: float = Field(
        90.0, ge=0, le=100, description="Uncertainty arm: BALD above this percentile of the slide."
    )
    uncertainty_clusters: tuple[int, int] = Field(
        (5, 20), description="Min and max per-slide K-means clusters of uncertain tiles."
    )
    weight_clip: tuple[float, float] = Field(
        (0.5, 2.0), description="Slide weights of the uncertainty draw clipped to these x mean."
    )
    mosaic: bool = Field(True, description="Draw the mosaic image of the selected tiles.")
    seed: int = Field(0, description="Seed of every random choice of the selection.")

    @field_validator("hidden_sizes")
    @classmethod
    def _layers(cls, value: list[list[int]]) -> list[list[int]]:
        if not value or any(not layers or min(layers) < 1 for layers in value):
            raise ValueError("give at least one depth, each a non-empty list of sizes >= 1")
        return value

    @field_validator("uncertainty_clusters")
    @classmethod
    def _cluster_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1]:
            raise ValueError("needs 1 <= min <= max")
        return value

    @field_validator("weight_clip")
    @classmethod
    def _clip_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= 1 <= value[1]:
            raise ValueError("needs 0 < low <= 1 <= high (multiples of the mean weight)")
        return value
