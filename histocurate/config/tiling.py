"""[tiling]: tissue detection and the tile grid (`histocurate tile`)."""

from __future__ import annotations

from pydantic import Field

from histocurate.config.base import Section


class TilingConfig(Section):
    """Tissue detection and the tile grid."""

    tile_size_um: float = Field(112.0, gt=0, description="Tile side in micrometres.")
    target_mpp: float | None = Field(
        None,
        gt=0,
        description="Resolution of tiles as read (um/px). None: the standard resolution "
        "(0.25 or 0.5) nearest the slide's own.",
    )
    tissue_threshold: float = Field(
        0.5, ge=0, le=1, description="Keep tiles whose tissue fraction is at least this."
    )
    thumbnail_mpp: float = Field(
        8.0, gt=0, description="Resolution of the thumbnail tissue is detected on (um/px)."
    )
