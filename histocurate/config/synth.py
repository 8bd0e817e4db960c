"""[synth]: the built-in synthetic cohort (`histocurate synth`)."""

from __future__ import annotations

from pydantic import Field

from histocurate.config.base import Section


class SynthConfig(Section):
    """The built-in synthetic cohort (`histocurate synth`)."""

    indications: list[str] = Field(
        default_factory=lambda: ["LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"]
    )
    slides_per_indication: int = Field(2, ge=1)
    width_px: int = Field(4096, ge=512)
    height_px: int = Field(4096, ge=512)
    mpp: float = Field(0.25, gt=0)
    seed: int = 0
