"""Multi-annotator consensus: match masks across annotators, vote labels, report agreement.

The core is pure (`consensus_nuclei`, `build_consensus`): a DataFrame of annotated masks
in, one row per consensus nucleus out. The stage (`histocurate.consensus.stage`) reads
masks.parquet, re-segments the consensus centroids and writes consensus.parquet, GeoJSON
for QuPath and overlay PNGs.
"""

from histocurate.consensus.core import (
    NUCLEI_COLUMNS,
    ConsensusResult,
    apply_labels,
    build_consensus,
    consensus_nuclei,
)
from histocurate.consensus.labels import LABEL_RULES, dawid_skene, majority_label
from histocurate.consensus.matching import match_masks

__all__ = [
    "LABEL_RULES",
    "NUCLEI_COLUMNS",
    "ConsensusResult",
    "apply_labels",
    "build_consensus",
    "consensus_nuclei",
    "dawid_skene",
    "majority_label",
    "match_masks",
]
