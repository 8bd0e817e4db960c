"""[predict]: CellViT inference (`histocurate predict`)."""

from __future__ import annotations

from pydantic import Field

from histocurate.config.base import Section


class PredictConfig(Section):
    """Defaults of `histocurate predict` (flags override them)."""

    device: str = Field("auto", description="'auto' (cuda when present), 'cpu', 'cuda:1'.")
