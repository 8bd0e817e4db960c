"""Fine-tuning: ``--weights`` naming a CellViT checkpoint (ours or a released HistoPLUS
one) instead of encoder weights, and how its classes map onto the dataset's.

A checkpoint class maps to a dataset class when they are the same cell type: our
checkpoints name label ids; HistoPLUS names its 14 types in words (its "Muscle Cell" is our
smooth muscle cell; its "Minor Stromal Cell" is none of ours and is dropped). Checkpoint
classes the dataset lacks are dropped (said in the report); dataset classes the checkpoint
lacks are refused, naming the mapping, unless ``[train] new_classes`` starts their
outputs from random weights.

>>> m = class_rows(["Cancer cell", "Lymphocytes", "Minor Stromal Cell"],
...                ["lymphocyte", "cancer_cell"], new_classes=False)
>>> m.rows, m.dropped
([2, 1], ['Minor Stromal Cell'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from histocurate.cellvit.checkpoint import FORMAT, load_checkpoint
from histocurate.cellvit.finetune import adapt_head
from histocurate.cellvit.model import CellViT
from histocurate.dataset.classes import DATASET_LABELS, display_name
from histocurate.errors import UserInputError
from histocurate.labels import HISTOPLUS_LABELS

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def label_of_class(name: str) -> str | None:
    """Our label id for a checkpoint's class name (id, HistoPLUS name or display name)."""
    if name in DATASET_LABELS:
        return name
    if name in HISTOPLUS_LABELS:
        return HISTOPLUS_LABELS[name]
    by_display = {display_name(label): label for label in DATASET_LABELS}
    return by_display.get(name)


def is_cellvit_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a whole CellViT model (ours or a bare HistoPLUS state dict)
    rather than encoder weights."""
    if not path.is_file() or path.suffix not in CHECKPOINT_SUFFIXES:
        return False
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False  # the encoder loaders will say what is wrong with it
    if not isinstance(raw, dict):
        return False
    return raw.get("format") == FORMAT or any(
        str(k).removeprefix("module.").startswith("np_branch.") for k in raw
    )


@dataclass
class ClassRows:
    """For each dataset class, the checkpoint row it starts from (None: random)."""

    rows: list[int | None]
    lines: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def class_rows(
    checkpoint: Sequence[str], dataset: Sequence[str], *, new_classes: bool
) -> ClassRows:
    """Map the checkpoint's classes onto the dataset's (module docstring)."""
    labels = [label_of_class(name) for name in checkpoint]
    rows: list[int | None] = []
    lines, missing = [], []
    for label in dataset:
        row = labels.index(label) + 1 if label in labels else None
        rows.append(row)
        if row is None:
            missing.append(label)
            lines.append(f"{label} <- (new, random)")
        else:
            lines.append(f"{label} <- {checkpoint[row - 1]}")
    used = {r for r in rows if r is not None}
    dropped = [name for k, name in enumerate(checkpoint, start=1) if k not in used]
    if missing and not new_classes:
        raise UserInputError(
            f"the dataset's classes {missing} are not classes of the checkpoint "
            f"({', '.join(checkpoint)}); mapping: {'; '.join(lines)}. Fine-tune with "
            "`[train] new_classes = true` (HISTOCURATE_TRAIN__NEW_CLASSES=true) to start them "
            "from random weights, or use a dataset of the checkpoint's classes"
        )
    return ClassRows(rows, lines, dropped)


def finetune_model(
    path: Path, dataset: Sequence[str], *, new_classes: bool
) -> tuple[CellViT, ClassRows, float | None]:
    """The checkpoint's model with its type head fitted to ``dataset``'s classes, the
    mapping, and the checkpoint's mpp."""
    model, info = load_checkpoint(path)
    mapping = class_rows(info.classes, dataset, new_classes=new_classes)
    return adapt_head(model, mapping.rows).train(), mapping, info.mpp
