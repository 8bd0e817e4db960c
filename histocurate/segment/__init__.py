"""The segment stage: every click becomes a nucleus mask (NuClick, or a classical watershed).

Library entry points for other stages: `make_segmenter` and `segment_points` (the
consensus stage re-segments consensus centroids with them); `run_segment` runs the stage.
"""

from histocurate.segment.segmenters import (
    SEGMENTERS,
    NuClickSegmenter,
    Segmenter,
    WatershedSegmenter,
    make_segmenter,
    segment_images,
    segment_points,
)
from histocurate.segment.stage import SegmentRun, plan_segment, run_segment, segment_tiles
from nuclick.postprocess import SegmentationResult

__all__ = [
    "SEGMENTERS",
    "NuClickSegmenter",
    "SegmentRun",
    "SegmentationResult",
    "Segmenter",
    "WatershedSegmenter",
    "make_segmenter",
    "plan_segment",
    "run_segment",
    "segment_images",
    "segment_points",
    "segment_tiles",
]
