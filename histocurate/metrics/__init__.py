"""Evaluation metrics: panoptic quality (DQ, SQ, PQ), per-class F1 with multi-label truth,
bootstrap intervals and paired p-values, and the evaluation of instance tables.

Pure functions over arrays first (`panoptic_quality`, `match_instances`, `class_counts`,
`classification_scores`, `resample_weights`...), then `evaluate` on instance tables, which
the CLI (`histocurate evaluate`) and the Prefect flow (`flows/evaluate.py`) only wire.
"""

from histocurate.geometry.raster import rasterize
from histocurate.metrics.bootstrap import (
    paired_p_value,
    percentile_interval,
    resample_sums,
    resample_weights,
)
from histocurate.metrics.classification import (
    CLASS_STATS,
    HOVERNET_WEIGHTS,
    class_counts,
    classification_scores,
    encode_label_sets,
    encode_predictions,
)
from histocurate.metrics.evaluate import Evaluation, EvaluationOptions, evaluate
from histocurate.metrics.maps import MetricsInputError, check_instance_map, relabel_contiguous
from histocurate.metrics.pairing import Pairs, pair_points
from histocurate.metrics.panoptic import (
    InstanceMatch,
    PanopticQuality,
    match_instances,
    panoptic_quality,
    panoptic_quality_polygons,
    pooled,
    tile_mean,
)
from histocurate.metrics.tables import Instances, instances_from_frame, read_instances

__all__ = [
    "CLASS_STATS",
    "HOVERNET_WEIGHTS",
    "Evaluation",
    "EvaluationOptions",
    "InstanceMatch",
    "Instances",
    "MetricsInputError",
    "Pairs",
    "PanopticQuality",
    "check_instance_map",
    "class_counts",
    "classification_scores",
    "encode_label_sets",
    "encode_predictions",
    "evaluate",
    "instances_from_frame",
    "match_instances",
    "pair_points",
    "paired_p_value",
    "panoptic_quality",
    "panoptic_quality_polygons",
    "percentile_interval",
    "pooled",
    "rasterize",
    "read_instances",
    "relabel_contiguous",
    "resample_sums",
    "resample_weights",
    "tile_mean",
]
