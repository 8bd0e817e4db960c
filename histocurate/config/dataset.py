"""[dataset]: curated datasets (`histocurate dataset build`, `histocurate dataset import`)."""

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
    mpp: float = Field(
        0.25,
        gt=0,
        description="Resolution of the dataset, um/px; tiles annotated at another resolution "
        "are resampled to it (image bilinear, maps from the polygons or nearest).",
    )
    workers: int = Field(
        1, ge=1, description="Processes building tiles on the command line (Prefect: its tasks)."
    )
