"""The segment stage: every click becomes a nucleus mask (NuClick, or a classical watershed).

Library entry points for other stages: `make_segmenter` and `segment_points` (the
consensus stage re-segments consensus centroids with them); `run_segment` runs the stage.
"""

from histocurate.segment.plan import SegmentPlan, plan_segment
from histocurate.segment.segmenters import (
    SEGMENTERS,
    NuClickSegmenter,
    Segmenter,
    WatershedSegmenter,
    make_segmenter,
    segment_images,
    segment_points,
)
from histocurate.segment.stage import SegmentRun, run_segment, segment_batch, segmenter_for
from nuclick.postprocess import SegmentationResult

__all__ = [
    "SEGMENTERS",
    "NuClickSegmenter",
    "SegmentPlan",
    "SegmentRun",
    "SegmentationResult",
    "Segmenter",
    "WatershedSegmenter",
    "make_segmenter",
    "plan_segment",
    "run_segment",
    "segment_batch",
    "segment_images",
    "segment_points",
    "segmenter_for",
]
