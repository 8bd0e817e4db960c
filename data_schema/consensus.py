"""consensus: one row per consensus nucleus (several annotators' masks matched together)."""

import pyarrow as pa

from data_schema._table import Column, TableSchema
from data_schema.masks import SEGMENTERS
from histocurate.labels import ANNOTATION_LABELS, LABELS

LABEL_RULES = ("majority", "dawid-skene")
POLYGON_SOURCES = ("resegmented", "member")
FATES = ("kept", "dropped", "single_annotator_tile", "no_mask")

CONSENSUS = TableSchema(
    name="consensus",
    version=2,
    doc=(
        "Consensus nuclei of a campaign: masks of different annotators matched one-to-one "
        "(IoU > threshold), kept when found by enough annotators, labelled by majority (or "
        "Dawid-Skene), polygon re-segmented at the consensus centroid on the exported pixels. "
        "One file per campaign (campaigns/<project>/consensus.parquet); its provenance "
        "records the masks it was made from."
    ),
    columns=(
        Column("project", pa.string(), "Campaign (Cytomine project name)."),
        Column(
            "consensus_id",
            pa.int64(),
            "Id of the nucleus: the smallest annotation id among its members (stable on rerun).",
        ),
        Column("tile_id", pa.string(), "Tile the nucleus lies on."),
        Column("x", pa.float64(), "Mean of the members' clicks, column, tile pixels."),
        Column(
            "y", pa.float64(), "Mean of the members' clicks, row, tile pixels (origin top-left)."
        ),
        Column(
            "label",
            pa.string(),
            "Label by the rule in label_rule; null when undetermined (see labels).",
            nullable=True,
            choices=LABELS,
        ),
        Column(
            "labels",
            pa.list_(pa.string()),
            "Cell types proposed by the members, sorted, distinct; ['unknown'] only when every "
            "member said 'unknown'. Always filled.",
            choices=ANNOTATION_LABELS,
        ),
        Column(
            "label_majority",
            pa.string(),
            "Type chosen by more than half of the members that gave a type; else null.",
            nullable=True,
        ),
        Column(
            "label_dawid_skene",
            pa.string(),
            "Type with Dawid-Skene posterior > 0.5 (EM over the whole campaign); else null.",
            nullable=True,
        ),
        Column(
            "dawid_skene_probability",
            pa.float64(),
            "Dawid-Skene posterior of the most probable type; null when no member gave a type.",
            nullable=True,
        ),
        Column("label_rule", pa.string(), "Rule that set label.", choices=LABEL_RULES),
        Column("annotators", pa.list_(pa.string()), "Annotators of the members, sorted."),
        Column("members", pa.list_(pa.int64()), "Annotation ids of the members (same order)."),
        Column(
            "member_labels",
            pa.list_(pa.string()),
            "Label each member gave, 'unknown' included (same order as annotators).",
        ),
        Column("n_annotators", pa.int32(), "Number of members (= distinct annotators)."),
        Column(
            "mean_iou",
            pa.float64(),
            "Mean IoU over the pairs of member masks; null for a single-member nucleus.",
            nullable=True,
        ),
        Column("polygon", pa.binary(), "Final nucleus outline, WKB, tile pixels."),
        Column(
            "polygon_source",
            pa.string(),
            "'resegmented' (segmenter at the consensus centroid) or 'member' (the member mask "
            "with the highest IoU to the others, when re-segmentation was off or failed).",
            choices=POLYGON_SOURCES,
        ),
        Column("segmenter", pa.string(), "Segmenter that made the polygon.", choices=SEGMENTERS),
        Column("area", pa.float64(), "Polygon area, square tile pixels."),
    ),
)

CONSENSUS_FATES = TableSchema(
    name="consensus_fates",
    version=2,
    doc=(
        "What consensus made of every annotation (one row per click): the nucleus it joined, "
        "or why it joined none. One file per campaign (campaigns/<project>/)."
    ),
    columns=(
        Column("project", pa.string(), "Campaign (Cytomine project name)."),
        Column("annotation_id", pa.int64(), "Annotation (click) id, as in masks.parquet."),
        Column("tile_id", pa.string(), "Tile of the click."),
        Column("annotator", pa.string(), "Who clicked."),
        Column("x", pa.float64(), "Click column, tile pixels."),
        Column("y", pa.float64(), "Click row, tile pixels."),
        Column(
            "label",
            pa.string(),
            "Label the annotator gave ('unknown' allowed).",
            choices=ANNOTATION_LABELS,
        ),
        Column(
            "consensus_id",
            pa.int64(),
            "Consensus nucleus it is a member of; null when not kept.",
            nullable=True,
        ),
        Column(
            "status",
            pa.string(),
            "'kept', 'dropped' (too few annotators found it), 'single_annotator_tile' (only "
            "one annotator on the tile) or 'no_mask' (no usable mask).",
            choices=FATES,
        ),
    ),
)
