"""[evaluate]: evaluation against a truth (`histocurate evaluate`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histocurate.config.base import Section


class EvaluateConfig(Section):
    """Evaluation of predictions against a truth (`histocurate evaluate`)."""

    iou_threshold: float = Field(
        0.5, ge=0, lt=1, description="A pair of nuclei counts when its IoU exceeds this."
    )
    match_radius_px: float = Field(
        12.0, gt=0, description="Point matching only: max centroid distance (6 at 20x)."
    )
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples of tiles (0: none).")
    seed: int = Field(0, description="Seed of the bootstrap resamples.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the intervals.")
    multilabel: Literal["each", "split"] = Field(
        "each", description="A miss on a nucleus with several labels: FN for each, or 1/|S|."
    )
    aggregate: Literal["pooled", "tile_mean"] = Field(
        "pooled", description="DQ/SQ/PQ from counts pooled over tiles, or mean of tiles."
    )
