"""[segment]: clicks to nucleus masks (`histocurate segment`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from histocurate.config.base import Section


class SegmentConfig(Section):
    """Clicks to nucleus masks (`histocurate segment`)."""

    segmenter: Literal["auto", "nuclick", "watershed"] = Field(
        "auto",
        description="'nuclick' (needs checkpoint), 'watershed' (classical, no weights), or "
        "'auto': nuclick when a checkpoint is set, else watershed.",
    )
    checkpoint: Path | None = Field(
        None, description="NuClick weights (ours or the public PyTorch layout), workspace-relative."
    )
    device: str = Field("auto", description="Torch device for NuClick ('auto': cuda if present).")
    batch_size: int = Field(64, ge=1, description="NuClick patches per forward pass.")
    threshold: float = Field(0.5, gt=0, lt=1, description="NuClick probability threshold.")
    tiles_per_batch: int = Field(
        16, ge=1, description="Tiles whose clicks share NuClick batches (and one Prefect task)."
    )
    overlays: int = Field(12, ge=0, description="Overlay PNGs for at most this many tiles.")
