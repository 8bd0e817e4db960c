"""[dataset]: curated datasets (`histocurate dataset build`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histocurate.config.base import Section


class DatasetConfig(Section):
    """How a campaign's annotations become a dataset (tiles + maps + nuclei + folds)."""

    source: Literal["consensus", "masks"] = Field(
        "consensus",
        description="'consensus' (validation sets, HistoVAL) or 'masks' (one annotator per "
        "tile, training sets, HistoTRAIN).",
    )
    folds: int = Field(3, ge=1, description="Folds, stratified by cell type, grouped by slide.")
    seed: int = Field(111, description="Seed of the fold assignment.")
