"""PanNuke: import its fold folders, export a dataset in its layout.

PanNuke's files, per fold (``Fold 1/images/fold1/images.npy`` and so on; any layout where
a ``Fold N``/``foldN`` folder holds the three files works):

- ``images.npy`` (N, H, W, 3): RGB, stored as floats 0-255 (rounded to uint8 here);
- ``masks.npy`` (N, H, W, 6): channels 0-4 hold instance ids of Neoplastic, Inflammatory,
  Connective/soft tissue, Dead and Epithelial nuclei (ids not unique across channels),
  channel 5 is the background;
- ``types.npy`` (N,): the tissue of each image (kept as the indication).

Import: 0.25 um/px, the three official folds kept (Fold 1 -> fold 0). Each image is its own
group ("slide"): PanNuke does not say which slide an image comes from. Channels are merged
with the project's overlap rule (a pixel claimed by several channels goes to the smallest
nucleus, where CellViT lets the later channel win), and the pixels this decides are counted.
Arrays are memory-mapped: a fold of PanNuke (~8 GB of float masks) is never loaded whole.

Export: the same (official download) layout, images uint8 and masks int32 (PanNuke's
float64 would be 4x the size; readers cast them anyway), types.npy = indications, for tiles
of one size. Who reads it: this importer, and PanNuke-metrics (``masks[..., :5]``). CellViT's
training does *not* read it directly: its ``prepare_pannuke.py`` expects flat 0-based
``input/fold{0,1,2}/images.npy`` and ``masks.npy`` and hard-codes 256 x 256 tiles (ours are
usually 448 px), and its ``PanNukeDataset`` reads the per-image folders that script writes.
For CellViT use the ``cellvit`` export (`histocurate.dataset.formats.cellvit`), which writes
those folders for any tile size.

Our classes map to PanNuke's channels by `TO_PANNUKE`; an undetermined nucleus goes to a
channel when all its proposed labels map to that channel; the others (red blood cells,
'epithelial_any', 'other', undetermined across channels) are left out and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from histocurate.dataset.classes import PANNUKE_CLASSES, TO_PANNUKE
from histocurate.dataset.formats.common import ImportPlan
from histocurate.dataset.store import DatasetVersion
from histocurate.dataset.tilework import ImportedMeta, TileResult, imported_tile
from histocurate.errors import UserInputError
from histocurate.io import atomic_folder

CHUNK = 256
_FOLD = re.compile(r"^fold[\s_-]*(\d+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PanNukeFold:
    number: int  # as PanNuke names it (1-based)
    images: Path
    masks: Path
    types: Path


@dataclass(frozen=True, slots=True)
class PanNukeChunk:
    fold: PanNukeFold
    start: int
    stop: int


def _fold_root(path: Path, directory: Path) -> tuple[int, Path]:
    found: tuple[int, Path] | None = None
    for parent in path.parents:
        if parent == directory.parent:
            break
        match = _FOLD.match(parent.name)
        if match:
            found = (int(match.group(1)), parent)  # keep walking: the outermost fold folder
    return found if found else (1, path.parent)


def _one(root: Path, key: str) -> Path:
    hits = sorted(root.rglob(key))
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)}"
        raise UserInputError(
            f"{root}: {what} {key} in this PanNuke fold folder (expected one, beside "
            "images.npy: images.npy, masks.npy and types.npy per fold)"
        )
    return hits[0]


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        try:
            return np.load(path, allow_pickle=True)  # types.npy of some copies: objects
        except Exception:
            raise UserInputError(f"{path}: not a readable .npy file ({exc})") from None


def find_folds(directory: Path) -> list[PanNukeFold]:
    """The fold folders under ``directory``, their arrays' shapes checked."""
    directory = Path(directory)
    images = sorted(directory.rglob("images.npy"))
    if not images:
        raise UserInputError(
            f"{directory}: no images.npy found; expected PanNuke's fold folders "
            "(Fold 1/images/fold1/images.npy, .../masks.npy, .../types.npy)"
        )
    folds = []
    for path in images:
        number, root = _fold_root(path, directory)
        fold = PanNukeFold(number, path, _one(root, "masks.npy"), _one(root, "types.npy"))
        img, msk, typ = _load(fold.images), _load(fold.masks), _load(fold.types)
        if img.ndim != 4 or img.shape[3] != 3:
            raise UserInputError(f"{fold.images}: shape {img.shape}, expected (N, H, W, 3)")
        if msk.ndim != 4 or msk.shape[3] != 6 or msk.shape[1:3] != img.shape[1:3]:
            raise UserInputError(
                f"{fold.masks}: shape {msk.shape}, expected (N, {img.shape[1]}, "
                f"{img.shape[2]}, 6) to match images.npy"
            )
        if not (len(img) == len(msk) == len(typ)):
            raise UserInputError(
                f"{root}: mismatched array lengths: images.npy has {len(img)} images, "
                f"masks.npy {len(msk)}, types.npy {len(typ)}"
            )
        folds.append(fold)
    numbers = [f.number for f in folds]
    if len(set(numbers)) != len(numbers):
        raise UserInputError(f"{directory}: fold numbers {numbers} repeat")
    return sorted(folds, key=lambda f: f.number)


def merge_channels(masks: np.ndarray) -> tuple[np.ndarray, dict[int, str], set[int]]:
    """One instance map from PanNuke's class channels: (map, id -> label, contested ids).

    >>> m = np.zeros((3, 3, 6)); m[0, :2, 0] = 4; m[:, 1, 2] = 1  # pixel (0, 1) in both
    >>> inst, labels, lost = merge_channels(m)
    >>> inst.tolist(), labels, sorted(lost)
    ([[1, 1, 0], [0, 2, 0], [0, 2, 0]], {1: 'cancer_cell', 2: 'connective'}, [2])
    """
    height, width = masks.shape[:2]
    candidates = np.zeros((5, height, width), dtype=np.int64)
    labels: dict[int, str] = {}
    offset = 0
    for channel in range(5):
        values = np.rint(np.asarray(masks[..., channel], dtype=np.float64)).astype(np.int64)
        ids = np.unique(values[values > 0])
        if not len(ids):
            continue
        lut = np.zeros(int(ids.max()) + 1, dtype=np.int64)
        lut[ids] = np.arange(offset + 1, offset + len(ids) + 1)
        candidates[channel] = lut[values]
        labels.update({int(g): PANNUKE_CLASSES[channel] for g in lut[ids]})
        offset += len(ids)
    area = np.bincount(candidates.reshape(-1), minlength=offset + 1).astype(np.float64)
    area[0] = np.inf
    winner = np.argmin(area[candidates], axis=0)
    inst = np.take_along_axis(candidates, winner[None], axis=0)[0]
    kept = np.bincount(inst.reshape(-1), minlength=offset + 1)
    lost = {i for i in labels if kept[i] < area[i]}
    return inst, {i: v for i, v in labels.items() if kept[i] > 0}, lost


def convert(chunk: PanNukeChunk, *, folds: dict[str, int], mpp: float) -> list[TileResult]:
    """The images ``start:stop`` of one fold as dataset tiles."""
    images, masks = _load(chunk.fold.images), _load(chunk.fold.masks)
    types = _load(chunk.fold.types)
    results = []
    for i in range(chunk.start, chunk.stop):
        tile_id = f"pannuke-f{chunk.fold.number}-{i:05d}"
        rgb = np.clip(np.rint(np.asarray(images[i], dtype=np.float64)), 0, 255).astype(np.uint8)
        inst, labels, lost = merge_channels(np.asarray(masks[i]))
        meta = ImportedMeta(tile_id, tile_id, str(types[i]), "PanNuke", folds[tile_id], 0.25)
        result = imported_tile(meta, rgb, inst, labels, mpp=mpp, contested=lost)
        claimed = (np.rint(np.asarray(masks[i][..., :5], dtype=np.float64)) > 0).sum(axis=2)
        result.contested_pixels = int((claimed > 1).sum())
        results.append(result)
    return results


def _name(chunk: PanNukeChunk) -> str:
    return f"fold{chunk.fold.number}-{chunk.start}"


def pannuke_plan(directory: Path, *, source_mpp: float | None = None) -> ImportPlan:
    """What importing ``directory`` means (its folds, chunks of `CHUNK` images)."""
    directory = Path(directory).resolve()
    folds = find_folds(directory)
    chunks, fold_of = [], {}
    for rank, fold in enumerate(folds):
        n = len(_load(fold.types))
        chunks += [PanNukeChunk(fold, s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
        fold_of.update({f"pannuke-f{fold.number}-{i:05d}": rank for i in range(n)})
    return ImportPlan(
        format="pannuke",
        directory=directory,
        items=chunks,
        item_name=_name,
        convert=convert,
        files=[p for f in folds for p in (f.images, f.masks, f.types)],
        labels=sorted(set(PANNUKE_CLASSES.values())),
        source_mpp=source_mpp or 0.25,
        folds=fold_of,
        notes=[f"PanNuke Fold {f.number} -> fold {k}" for k, f in enumerate(folds)],
    )


def pannuke_channel(label: Any, labels: Any) -> int | None:
    """PanNuke channel of a nucleus (None: no PanNuke class)."""
    if isinstance(label, str):
        return TO_PANNUKE.get(label)
    channels = {TO_PANNUKE.get(v) for v in labels if v != "unknown"}
    return channels.pop() if len(channels) == 1 and None not in channels else None


def export_pannuke(version: DatasetVersion, out: Path) -> dict[str, Any]:
    """Write ``version`` in PanNuke's layout under ``out`` (new or empty); returns counts."""
    from numpy.lib.format import open_memmap

    from histocurate.dataset.reader import NucleiDataset

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out}: not empty; export into a new or empty folder")
    data = NucleiDataset(version.path)
    sizes = data.meta[["height", "width"]].drop_duplicates()
    if len(sizes) != 1:
        raise UserInputError(
            f"{version.spec}: tiles of several sizes ({sizes.values.tolist()}); PanNuke "
            "arrays need one size"
        )
    height, width = (int(v) for v in sizes.iloc[0])
    nuclei = pq.read_table(
        version.nuclei, columns=["tile_id", "nucleus_id", "label", "labels"]
    ).to_pandas()
    nuclei["channel"] = [
        pannuke_channel(a, b) for a, b in zip(nuclei["label"], nuclei["labels"], strict=True)
    ]
    by_tile = {t: g for t, g in nuclei.groupby("tile_id", sort=False)}
    counts = {"tiles": 0, "exported": 0, "left_out": 0}
    with atomic_folder(out) as tmp:
        for fold in sorted(data.meta["fold"].unique()):
            rows = np.flatnonzero(data.meta["fold"].to_numpy() == fold)
            number = int(fold) + 1
            images_dir = tmp / f"Fold {number}" / "images" / f"fold{number}"
            masks_dir = tmp / f"Fold {number}" / "masks" / f"fold{number}"
            images_dir.mkdir(parents=True)
            masks_dir.mkdir(parents=True)
            images = open_memmap(
                images_dir / "images.npy",
                mode="w+",
                dtype=np.uint8,
                shape=(len(rows), height, width, 3),
            )
            masks = open_memmap(
                masks_dir / "masks.npy",
                mode="w+",
                dtype=np.int32,
                shape=(len(rows), height, width, 6),
            )
            for k, row in enumerate(rows):
                item = data[int(row)]
                images[k] = item["image"]
                inst = item["inst_map"]
                group = by_tile.get(item["tile_id"])
                lut = np.full(int(inst.max()) + 1, -1, dtype=np.int64)
                if group is not None:
                    known = group["channel"].notna().to_numpy()
                    ids = group["nucleus_id"].to_numpy()
                    lut[ids[known]] = group["channel"].to_numpy()[known].astype(np.int64)
                    counts["exported"] += int(known.sum())
                    counts["left_out"] += int((~known).sum())
                channel = lut[inst]
                for j in range(5):
                    masks[k, ..., j] = np.where(channel == j, inst, 0)
                masks[k, ..., 5] = (channel < 0).astype(np.int32)
            images.flush()
            masks.flush()
            del images, masks
            types = data.meta["indication"].to_numpy()[rows].astype(str)
            np.save(images_dir / "types.npy", types)
            counts["tiles"] += len(rows)
    return counts
