"""CellViT export: a dataset version as the folders CellViT's own training code reads.

CellViT (TIO-IKIM/CellViT) does not train on PanNuke's ``.npy`` arrays directly: its
``prepare_pannuke.py`` first turns ``input/fold{0,1,2}/images.npy`` + ``masks.npy`` into one
PNG and one label file per image, and its ``PanNukeDataset`` (the training loader) reads
that result. This exporter writes the result itself, so it works for any tile size
(``prepare_pannuke.py`` hard-codes 256 x 256; our tiles are usually 448 px at 0.25 um/px):

    OUT/dataset_config.yaml        tissue_types {indication: k}, nuclei_types {name: index}
    OUT/weight_config.yaml         tissue: {indication: tiles} (CellViT's tissue sampling)
    OUT/fold{k}/images/{k}_{i}.png the tile (RGB uint8)
    OUT/fold{k}/labels/{k}_{i}.npy a pickled dict {"inst_map": int32 HxW, "type_map": int32 HxW}
    OUT/fold{k}/types.csv          img,type (image file name -> indication)
    OUT/fold{k}/cell_count.csv     Image,<one column per nuclei type>: nuclei per image
    OUT/fold{k}/tiles.csv          img,tile_id,slide_id (ours, for tracing back; CellViT
                                   ignores it)

``k`` is our fold (0-based, as CellViT's ``--folds``/``data.train_folds``). Names are
``{fold}_{i}`` as ``prepare_pannuke.py`` makes them, unique across folds (PanNukeDataset
merges the folds' ``types.csv`` by file name).

Classes (``classes=``):

- ``"dataset"`` (default): the version's own classes (``dataset.json``), renumbered 1..K in
  their index order (CellViT one-hot encodes the type map: values must be < K + 1);
  ``nuclei_types`` and the ``cell_count.csv`` columns are their display names. CellViT's
  ``get_sampling_weights_cell`` hard-codes PanNuke's five class frequencies, so cell-based
  oversampling needs ``"pannuke"``; random or tissue sampling works with any K.
- ``"pannuke"``: PanNuke's five classes with CellViT's PanNuke indices (1 Neoplastic,
  2 Inflammatory, 3 Connective, 4 Dead, 5 Epithelial; the mapping of the ``pannuke``
  export), so CellViT's PanNuke configs apply unchanged apart from the input size.

A nucleus without a class in the chosen list (undetermined, or no PanNuke class) stays in
``inst_map`` (it is a nucleus for the NP and HV branches) with type 0 in ``type_map``:
CellViT's type loss has no ignore value. Such nuclei are counted (``untyped``).

Tile size: set CellViT's ``data.input_shape`` to the tiles' size (its PanNuke configs use
256).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from histocurate.dataset.classes import TO_PANNUKE
from histocurate.dataset.store import DatasetVersion
from histocurate.errors import UserInputError
from histocurate.io import atomic_folder
from histocurate.labels import UNKNOWN

CLASS_CHOICES = ("dataset", "pannuke")
CELLVIT_PANNUKE_NAMES = ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial")
"""CellViT's PanNuke nuclei_types 1..5 and ``cell_count.csv`` columns (channel order)."""


def _yaml_mapping(name: str, values: dict[str, int]) -> str:
    # JSON strings are YAML double-quoted scalars: no YAML library needed.
    lines = [f"{name}:"] + [f"  {json.dumps(k)}: {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def cellvit_classes(version: DatasetVersion, classes: str) -> tuple[list[str], dict[str, int]]:
    """(type names 1..K, our label -> CellViT type index) for ``classes``."""
    if classes == "pannuke":
        return list(CELLVIT_PANNUKE_NAMES), {k: v + 1 for k, v in TO_PANNUKE.items()}
    if classes != "dataset":
        raise UserInputError(f"unknown class list {classes!r}: one of {', '.join(CLASS_CHOICES)}")
    table = sorted(version.info().get("classes", []), key=lambda c: int(c["index"]))
    names = [str(c["name"]) for c in table]
    return names, {str(c["id"]): k for k, c in enumerate(table, start=1)}


def cellvit_type(label: Any, labels: Any, index: dict[str, int]) -> int:
    """CellViT type of a nucleus (0: none in the chosen classes)."""
    if isinstance(label, str):
        return index.get(label, 0)
    found = {index.get(v, 0) for v in labels if v != UNKNOWN.id}
    return found.pop() if len(found) == 1 and 0 not in found else 0


def export_cellvit(
    version: DatasetVersion, out: Path, *, classes: str = "dataset"
) -> dict[str, Any]:
    """Write ``version`` as CellViT's prepared PanNuke folders under ``out`` (new or empty)."""
    from histocurate.dataset.reader import NucleiDataset

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out}: not empty; export into a new or empty folder")
    names, index = cellvit_classes(version, classes)
    data = NucleiDataset(version.path)
    nuclei = pq.read_table(
        version.nuclei, columns=["tile_id", "nucleus_id", "label", "labels"]
    ).to_pandas()
    nuclei["type"] = [
        cellvit_type(a, b, index) for a, b in zip(nuclei["label"], nuclei["labels"], strict=True)
    ]
    by_tile = {t: g for t, g in nuclei.groupby("tile_id", sort=False)}
    indications = sorted({str(v) for v in data.meta["indication"]})
    counts: dict[str, Any] = {"tiles": 0, "exported": 0, "left_out": 0, "untyped": 0}
    with atomic_folder(out) as tmp:
        for fold in sorted(int(f) for f in data.meta["fold"].unique()):
            rows = np.flatnonzero(data.meta["fold"].to_numpy() == fold)
            base = tmp / f"fold{fold}"
            (base / "images").mkdir(parents=True)
            (base / "labels").mkdir()
            types, cells, traced = [], [], []
            for i, row in enumerate(rows):
                item = data[int(row)]
                name = f"{fold}_{i}"
                Image.fromarray(item["image"]).save(base / "images" / f"{name}.png")
                inst = item["inst_map"].astype(np.int32)
                lut = np.zeros(int(inst.max()) + 1, dtype=np.int32)
                group = by_tile.get(item["tile_id"])
                per_type = np.zeros(len(names) + 1, dtype=np.int64)
                if group is not None:
                    ids = group["nucleus_id"].to_numpy().astype(np.int64)
                    kinds = group["type"].to_numpy().astype(np.int32)
                    keep = ids < len(lut)
                    lut[ids[keep]] = kinds[keep]
                    np.add.at(per_type, kinds[keep], 1)
                present = np.unique(inst[inst > 0])
                type_map = np.where(inst > 0, lut[inst], 0).astype(np.int32)
                # a 0-d object array holding the dict: what np.save(path, dict) writes
                labels = np.array({"inst_map": inst, "type_map": type_map}, dtype=object)
                np.save(base / "labels" / f"{name}.npy", labels, allow_pickle=True)
                typed = int((lut[present] > 0).sum())
                counts["exported"] += typed
                counts["untyped"] += len(present) - typed
                types.append({"img": f"{name}.png", "type": item["indication"]})
                cells.append([f"{name}.png", *per_type[1:].tolist()])
                traced.append(
                    {"img": f"{name}.png", "tile_id": item["tile_id"], "slide_id": item["slide_id"]}
                )
            pd.DataFrame(types, columns=["img", "type"]).to_csv(base / "types.csv", index=False)
            pd.DataFrame(cells, columns=["Image", *names]).to_csv(
                base / "cell_count.csv", index=False
            )
            pd.DataFrame(traced, columns=["img", "tile_id", "slide_id"]).to_csv(
                base / "tiles.csv", index=False
            )
            counts["tiles"] += len(rows)
        nuclei_types = {"Background": 0, **{n: k for k, n in enumerate(names, start=1)}}
        tissue_types = {t: k for k, t in enumerate(indications)}
        (tmp / "dataset_config.yaml").write_text(
            _yaml_mapping("tissue_types", tissue_types)
            + _yaml_mapping("nuclei_types", nuclei_types),
            encoding="utf-8",
        )
        tissue_counts = data.meta["indication"].astype(str).value_counts()
        (tmp / "weight_config.yaml").write_text(
            _yaml_mapping("tissue", {t: int(tissue_counts[t]) for t in indications}),
            encoding="utf-8",
        )
    counts["classes"] = names
    return counts


__all__ = ["CELLVIT_PANNUKE_NAMES", "CLASS_CHOICES", "cellvit_classes", "export_cellvit"]
