"""The cell-type ontology: label ids, display names, colours and the rare types.

Every table stores the label *id* (``cancer_cell``); display names are for Cytomine,
QuPath and reports. The order below is the ontology order and never changes, because the
integer class index used by models is ``LABELS.index(label) + 1`` (0 is background).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class CellType:
    """One entry of the ontology."""

    id: str
    name: str
    color: str  # "#rrggbb", used for Cytomine terms, QuPath classes and overlays


CELL_TYPES: Final[tuple[CellType, ...]] = (
    CellType("cancer_cell", "Cancer cell", "#e6194b"),
    CellType("lymphocyte", "Lymphocyte", "#3cb44b"),
    CellType("fibroblast", "Fibroblast", "#ffe119"),
    CellType("plasmocyte", "Plasmocyte", "#4363d8"),
    CellType("eosinophil", "Eosinophil", "#f58231"),
    CellType("neutrophil", "Neutrophil", "#911eb4"),
    CellType("macrophage", "Macrophage", "#46f0f0"),
    CellType("smooth_muscle_cell", "Smooth muscle cell", "#f032e6"),
    CellType("endothelial_cell", "Endothelial cell", "#bcf60c"),
    CellType("red_blood_cell", "Red blood cell", "#fabebe"),
    CellType("epithelial_cell", "Epithelial cell", "#008080"),
    CellType("mitotic_figure", "Mitotic figure", "#9a6324"),
    CellType("apoptotic_body", "Apoptotic body", "#800000"),
)
"""The 13 cell types, in ontology order."""

UNKNOWN: Final[CellType] = CellType("unknown", "Cell with unknown type", "#808080")
"""What an annotator gives when unsure: counts for detection, not as a type."""

LABELS: Final[tuple[str, ...]] = tuple(c.id for c in CELL_TYPES)
"""Label ids of the 13 cell types, in ontology order."""

ANNOTATION_LABELS: Final[tuple[str, ...]] = (*LABELS, UNKNOWN.id)
"""Everything an annotator may choose: the 13 types plus ``unknown``."""

RARE_LABELS: Final[tuple[str, ...]] = (
    "apoptotic_body",
    "mitotic_figure",
    "eosinophil",
    "endothelial_cell",
    "epithelial_cell",
    "macrophage",
    "neutrophil",
)
"""Under-represented types targeted by the rare-cell enrichment arm of selection."""

_BY_ID: Final[dict[str, CellType]] = {c.id: c for c in (*CELL_TYPES, UNKNOWN)}
_BY_NAME: Final[dict[str, CellType]] = {c.name.lower(): c for c in (*CELL_TYPES, UNKNOWN)}


def cell_type(label: str) -> CellType:
    """Return the ontology entry for a label id or display name (case-insensitive name).

    >>> cell_type("eosinophil").name
    'Eosinophil'
    >>> cell_type("Red blood cell").id
    'red_blood_cell'
    """
    found = _BY_ID.get(label) or _BY_NAME.get(label.lower())
    if found is None:
        raise KeyError(
            f"unknown cell type {label!r}; expected one of: {', '.join(ANNOTATION_LABELS)}"
        )
    return found


def class_index(label: str) -> int:
    """Integer class of a label for type maps: 1..13 in ontology order (0 = background)."""
    return LABELS.index(cell_type(label).id) + 1


HISTOPLUS_LABELS: Final[dict[str, str]] = {
    "Cancer cell": "cancer_cell",
    "Lymphocytes": "lymphocyte",
    "Fibroblasts": "fibroblast",
    "Plasmocytes": "plasmocyte",
    "Eosinophils": "eosinophil",
    "Neutrophils": "neutrophil",
    "Macrophages": "macrophage",
    "Muscle Cell": "smooth_muscle_cell",
    "Endothelial Cell": "endothelial_cell",
    "Red blood cell": "red_blood_cell",
    "Epithelial": "epithelial_cell",
    "Apoptotic Body": "apoptotic_body",
    "Mitotic Figures": "mitotic_figure",
}
"""The released HistoPLUS checkpoints' class names -> our ids ("Minor Stromal Cell" has
none: kept under its own name)."""
