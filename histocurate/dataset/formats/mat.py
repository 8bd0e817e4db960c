"""CoNSeP and Lizard: import their ``.mat`` label files and the images beside them.

- CoNSeP: ``inst_map`` (H x W, 0 background), ``type_map``, ``inst_type`` (N x 1, the type
  of instance ids 1..N), ``inst_centroid``; images are PNGs at 40x (0.25 um/px). The
  ``Train``/``Test`` folders become folds 0 and 1.
- Lizard: ``inst_map``, ``class`` (N x 1, per instance) and ``id`` (N x 1, the instance id
  each row is about; 1..N when absent), ``centroid``; images are PNGs at 20x (0.5 um/px),
  resampled to the dataset's resolution (image bilinear, map nearest). ``info.csv``
  (``Filename``, ``Source``, ``Split``) gives the official folds (Split 1 -> fold 0) and the
  cohort; without it, folds are computed (grouped by image).

Each ``.mat`` file's image is the file with the same name (``.png``, ``.tif``, ``.jpg``)
anywhere under the folder. Classes map by `CONSEP_CLASSES` / `LIZARD_CLASSES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from histocurate.dataset.classes import CONSEP_CLASSES, LIZARD_CLASSES
from histocurate.dataset.formats.common import ImportPlan
from histocurate.dataset.tilework import ImportedMeta, TileResult, imported_tile
from histocurate.errors import UserInputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
NATIVE_MPP = {"consep": 0.25, "lizard": 0.5}
CLASSES = {"consep": CONSEP_CLASSES, "lizard": LIZARD_CLASSES}


@dataclass(frozen=True, slots=True)
class MatItem:
    format: str
    mat: Path
    image: Path
    tile_id: str
    cohort: str
    source_mpp: float


def load_labels(path: Path, fmt: str) -> tuple[np.ndarray, dict[int, str]]:
    """(instance map, instance id -> label) of one ``.mat`` file, checked."""
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except Exception as exc:
        raise UserInputError(f"{path}: not a readable .mat file ({exc})") from None
    keys = sorted(k for k in data if not k.startswith("__"))
    if "inst_map" not in data:
        raise UserInputError(
            f"{path}: no 'inst_map' key (keys: {', '.join(keys)}); not a {fmt} label file"
        )
    inst = np.asarray(data["inst_map"]).astype(np.int64)
    if inst.ndim != 2:
        raise UserInputError(f"{path}: 'inst_map' has shape {inst.shape}, expected (H, W)")
    key = "inst_type" if fmt == "consep" else "class"
    if key not in data:
        raise UserInputError(f"{path}: no {key!r} key (keys: {', '.join(keys)})")
    types = np.asarray(data[key]).reshape(-1).astype(np.int64)
    if fmt == "lizard" and "id" in data:
        ids = np.asarray(data["id"]).reshape(-1).astype(np.int64)
        if len(ids) != len(types):
            raise UserInputError(f"{path}: 'id' has {len(ids)} rows but 'class' {len(types)}")
    else:
        ids = np.arange(1, len(types) + 1)
    present = np.unique(inst[inst > 0])
    missing = sorted(set(present.tolist()) - set(ids.tolist()))
    if missing:
        raise UserInputError(
            f"{path}: instance id(s) {missing[:5]} of 'inst_map' have no row in {key!r} "
            f"({len(types)} rows)"
        )
    classes = CLASSES[fmt]
    unknown = sorted({int(t) for t in types} - set(classes))
    if unknown:
        raise UserInputError(
            f"{path}: {key!r} holds class(es) {unknown}, not {fmt} classes {sorted(classes)}"
        )
    wanted = set(present.tolist())
    return inst, {int(i): classes[int(t)] for i, t in zip(ids, types, strict=True) if i in wanted}


def _images(directory: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in directory.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, []).append(path)
    return found


def _info(directory: Path) -> pd.DataFrame | None:
    hits = sorted(directory.rglob("info.csv"))
    if not hits:
        return None
    frame = pd.read_csv(hits[0])
    needed = {"Filename", "Split"}
    if not needed <= set(frame.columns):
        raise UserInputError(
            f"{hits[0]}: columns {sorted(needed)} expected, found {list(frame.columns)}"
        )
    return frame.set_index("Filename")


def _split_of(path: Path) -> int | None:
    parts = [p.lower() for p in path.parts]
    if "train" in parts:
        return 0
    if "test" in parts:
        return 1
    return None


def convert(item: MatItem, *, folds: dict[str, int], mpp: float) -> list[TileResult]:
    from PIL import Image

    inst, labels = load_labels(item.mat, item.format)
    with Image.open(item.image) as image:
        rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[:2] != inst.shape:
        raise UserInputError(
            f"{item.image}: {rgb.shape[1]}x{rgb.shape[0]} px but "
            f"{item.mat} 'inst_map' is {inst.shape[1]}x{inst.shape[0]}"
        )
    meta = ImportedMeta(
        item.tile_id, item.tile_id, "colorectal", item.cohort, folds[item.tile_id], item.source_mpp
    )
    return [imported_tile(meta, rgb, inst, labels, mpp=mpp)]


def _name(item: MatItem) -> str:
    return item.tile_id


def mat_plan(directory: Path, fmt: str, *, source_mpp: float | None = None) -> ImportPlan:
    """What importing a CoNSeP or Lizard folder means."""
    directory = Path(directory).resolve()
    mats = sorted(directory.rglob("*.mat"))
    if not mats:
        raise UserInputError(f"{directory}: no .mat label file found for {fmt}")
    images, info = _images(directory), _info(directory)
    mpp = source_mpp or NATIVE_MPP[fmt]
    items, folds, counts, official = [], {}, {}, True
    for mat in mats:
        candidates = images.get(mat.stem, [])
        if not candidates:
            raise UserInputError(
                f"{mat}: no image named {mat.stem}.png (or .tif, .jpg) under {directory}"
            )
        image = sorted(candidates, key=lambda p: (p.parent.parent != mat.parent.parent, p))[0]
        split = _split_of(mat.relative_to(directory))
        cohort = fmt.capitalize() if fmt == "lizard" else "CoNSeP"
        if info is not None and mat.stem in info.index:
            split = int(str(info.at[mat.stem, "Split"])) - 1
            if "Source" in info.columns:
                cohort = str(info.at[mat.stem, "Source"])
        tile_id = f"{fmt}-{split if split is not None else 'x'}-{mat.stem}"
        items.append(MatItem(fmt, mat, image, tile_id, cohort, mpp))
        if split is None:
            official = False
        else:
            folds[tile_id] = split
        _, labels = load_labels(mat, fmt)
        counts[tile_id] = pd.Series(list(labels.values()), dtype=object).value_counts()
    class_labels = sorted(set(CLASSES[fmt].values()))
    table = pd.DataFrame(counts).T.reindex(columns=class_labels).fillna(0).astype(int)
    return ImportPlan(
        format=fmt,
        directory=directory,
        items=items,
        item_name=_name,
        convert=convert,
        files=[p for i in items for p in (i.mat, i.image)]
        + (sorted(directory.rglob("info.csv"))[:1] if info is not None else []),
        labels=class_labels,
        source_mpp=mpp,
        folds=folds if official else None,
        class_counts=None if official else table,
        tiles_per_slide=None if official else pd.Series(1, index=table.index),
    )
