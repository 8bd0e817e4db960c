"""The classes of a dataset's type map: the ontology, a few dataset-specific classes, ignore.

Type-map values mean the same thing in every dataset, built or imported:

- 0: background;
- 1..13: the 13 cell types in ontology order (``LABELS.index(label) + 1``, as
  `histocurate.labels.class_index` says);
- 14..18: classes of public datasets that are *not* one of our types (see below);
- `IGNORE_TYPE` (255): a nucleus whose type is undetermined (annotators disagreed, or said
  "unknown"). It is a nucleus for NP and HV, and the NT loss skips it; its label set stays in
  ``nuclei.parquet``. The value is the one `histocurate.cellvit.targets.IGNORE_TYPE` uses.

A fixed index per class (rather than indices compacted per dataset) keeps one meaning per
value across datasets: a PanNuke import and a campaign dataset can be concatenated. A
dataset's ``dataset.json`` lists the classes it can hold with their index.

How the public datasets' classes map (same cell type: ours; otherwise dataset-specific):

- PanNuke: Neoplastic -> cancer_cell; Epithelial (non-neoplastic) -> epithelial_cell;
  Inflammatory -> ``inflammatory`` (lymphocytes, plasma cells, neutrophils, eosinophils and
  macrophages together: no single type of ours); Connective/soft tissue -> ``connective``
  (fibroblasts, muscle and endothelial cells together); Dead -> ``dead`` (apoptotic and
  necrotic cells: wider than apoptotic_body).
- CoNSeP: healthy epithelial -> epithelial_cell; dysplastic/malignant epithelial ->
  cancer_cell (dysplasia is pre-malignant: the closest type, said here); fibroblast ->
  fibroblast; muscle -> smooth_muscle_cell (colonic muscle); endothelial ->
  endothelial_cell; inflammatory -> ``inflammatory``; other -> ``other``.
- Lizard: neutrophil, lymphocyte, plasma (plasmocyte) and eosinophil -> ours; epithelial ->
  ``epithelial_any`` (Lizard does not tell normal from malignant epithelium);
  connective tissue -> ``connective``.

>>> class_index("cancer_cell"), class_index("apoptotic_body"), class_index("inflammatory")
(1, 13, 14)
>>> label_of(14), label_of(IGNORE_TYPE)
('inflammatory', None)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from histocurate.labels import CELL_TYPES, LABELS, UNKNOWN, CellType

IGNORE_TYPE: Final = 255
"""Type-map value of an undetermined nucleus (skipped by the NT loss)."""

BACKGROUND: Final = 0

EXTRA_CLASSES: Final[tuple[CellType, ...]] = (
    CellType("inflammatory", "Inflammatory cell (unspecified)", "#2f4f4f"),
    CellType("connective", "Connective / soft tissue cell (unspecified)", "#bdb76b"),
    CellType("dead", "Dead cell (apoptotic or necrotic)", "#4b0082"),
    CellType("epithelial_any", "Epithelial cell, normal or malignant", "#20b2aa"),
    CellType("other", "Other cell", "#a9a9a9"),
)
"""Classes of public datasets that are not one of our cell types (indices 14..18)."""

ALL_CLASSES: Final[tuple[CellType, ...]] = (*CELL_TYPES, *EXTRA_CLASSES)
DATASET_LABELS: Final[tuple[str, ...]] = tuple(c.id for c in ALL_CLASSES)
"""Every label a dataset's ``nuclei.parquet`` may hold (index = position + 1)."""

DATASET_ANNOTATION_LABELS: Final[tuple[str, ...]] = (*DATASET_LABELS, UNKNOWN.id)
"""What a label set may hold: the classes plus ``unknown``."""

_BY_ID: Final[dict[str, CellType]] = {c.id: c for c in ALL_CLASSES}

# Native class -> our label, per format (the table of the module docstring).
PANNUKE_CLASSES: Final[dict[int, str]] = {
    0: "cancer_cell",
    1: "inflammatory",
    2: "connective",
    3: "dead",
    4: "epithelial_cell",
}
"""PanNuke mask channel -> label (channel 5 is background)."""
PANNUKE_NAMES: Final[tuple[str, ...]] = (
    "Neoplastic",
    "Inflammatory",
    "Connective/Soft tissue",
    "Dead",
    "Epithelial",
)
CONSEP_CLASSES: Final[dict[int, str]] = {
    1: "other",
    2: "inflammatory",
    3: "epithelial_cell",
    4: "cancer_cell",
    5: "fibroblast",
    6: "smooth_muscle_cell",
    7: "endothelial_cell",
}
"""CoNSeP ``inst_type`` (1-based) -> label."""
LIZARD_CLASSES: Final[dict[int, str]] = {
    1: "neutrophil",
    2: "epithelial_any",
    3: "lymphocyte",
    4: "plasmocyte",
    5: "eosinophil",
    6: "connective",
}
"""Lizard ``class`` (1-based) -> label."""

TO_PANNUKE: Final[dict[str, int]] = {
    "cancer_cell": 0,
    "mitotic_figure": 0,
    "lymphocyte": 1,
    "plasmocyte": 1,
    "eosinophil": 1,
    "neutrophil": 1,
    "macrophage": 1,
    "inflammatory": 1,
    "fibroblast": 2,
    "smooth_muscle_cell": 2,
    "endothelial_cell": 2,
    "connective": 2,
    "apoptotic_body": 3,
    "dead": 3,
    "epithelial_cell": 4,
}
"""Label -> PanNuke channel for the export. Mitotic figures go to Neoplastic (they are
dividing tumour cells in these tissues); red blood cells, ``epithelial_any`` and ``other``
have no PanNuke class and are left out of an export (counted in its report)."""


def class_index(label: str) -> int:
    """Type-map value of a label (ontology or dataset-specific)."""
    try:
        return DATASET_LABELS.index(label) + 1
    except ValueError:
        raise KeyError(
            f"{label!r} is not a dataset class; expected one of: {', '.join(DATASET_LABELS)}"
        ) from None


def label_of(index: int) -> str | None:
    """Label of a type-map value (None for background and `IGNORE_TYPE`)."""
    if 1 <= index <= len(DATASET_LABELS):
        return DATASET_LABELS[index - 1]
    return None


def is_ontology(label: str) -> bool:
    return label in LABELS


def class_table(labels: Iterable[str]) -> list[dict[str, Any]]:
    """``dataset.json`` entries of ``labels`` (index, id, name, colour), in index order."""
    chosen = sorted(set(labels), key=class_index)
    return [
        {
            "index": class_index(label),
            "id": label,
            "name": _BY_ID[label].name,
            "color": _BY_ID[label].color,
            "ontology": is_ontology(label),
        }
        for label in chosen
    ]


def display_name(label: str) -> str:
    found = _BY_ID.get(label)
    return found.name if found else (UNKNOWN.name if label == UNKNOWN.id else label)


def color_of(label: str) -> str:
    found = _BY_ID.get(label)
    return found.color if found else UNKNOWN.color
