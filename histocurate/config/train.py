"""[train]: CellViT training (`histocurate train`)."""

from __future__ import annotations

from pydantic import Field

from histocurate.config.base import Section


class TrainConfig(Section):
    """Defaults of `histocurate train` (flags override them)."""

    preset: str = Field("paper", description="Training preset: paper, cellvit or tiny.")
