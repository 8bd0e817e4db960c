"""[consensus]: multi-annotator consensus (`histocurate consensus`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histocurate.config.base import Section


class ConsensusConfig(Section):
    """Multi-annotator consensus (`histocurate consensus`)."""

    iou_threshold: float = Field(
        0.4, ge=0, lt=1, description="Masks of two annotators match when IoU exceeds this."
    )
    min_annotators: int = Field(
        2, ge=1, description="Keep nuclei found by at least this many annotators."
    )
    label_rule: Literal["majority", "dawid-skene"] = Field(
        "majority", description="Rule for the label column (both are always reported)."
    )
    resegment: bool = Field(
        True, description="Re-segment the consensus centroids with the configured segmenter."
    )
    geojson: bool = Field(True, description="Write a QuPath GeoJSON file per tile.")
    overlays: int = Field(
        25, ge=0, description="Overlay PNGs for at most this many tiles (0: none)."
    )
    shard_tiles: int = Field(64, ge=1, description="Tiles per task in the Prefect flow.")
