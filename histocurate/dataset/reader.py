"""`NucleiDataset`: a dataset version as a map-style torch Dataset, for training loops.

Each item is one tile: ``image`` (uint8, H x W x 3), ``inst_map`` (int32, H x W: 0
background, nucleus ids), ``type_map`` (uint8, H x W: 0 background, class index, 255 for an
undetermined nucleus), optionally ``set_map`` (int32: for undetermined nuclei the bitmask of
their proposed types, bit ``c`` for class index ``c``, as
`histocurate.cellvit.targets.label_set_bits`), and the tile's metadata (tile_id, slide_id,
indication, fold, mpp, index). Numpy arrays: the default collate makes tensors of them.

Random access reads one tile: ``tiles.parquet`` holds one row group per tile, and the file
is memory-mapped, so item ``i`` touches only its own bytes. Handles are opened lazily per
process and never pickled: each DataLoader worker (fork or spawn) opens its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray
from torch.utils.data import Dataset

from histocurate.dataset.classes import IGNORE_TYPE, class_index
from histocurate.dataset.maps import decode_map, decode_rgb
from histocurate.dataset.store import INFO_FILE, NUCLEI_FILE, TILES_FILE
from histocurate.errors import UserInputError

META_COLUMNS = [
    "tile_id",
    "slide_id",
    "indication",
    "cohort",
    "fold",
    "mpp",
    "width",
    "height",
    "n_nuclei",
    "n_undetermined",
]
PIXEL_COLUMNS = ["image", "inst_map", "type_map"]


def _locate(path: Path) -> tuple[Path, Path]:
    """(tiles.parquet, version folder) of a version folder or of its tiles file."""
    path = Path(path)
    tiles = path / TILES_FILE if path.is_dir() else path
    if not tiles.is_file():
        raise UserInputError(
            f"{path}: no {TILES_FILE} here; pass a dataset version folder (see "
            "`histocurate dataset list`) or its tiles.parquet"
        )
    return tiles, tiles.parent


class NucleiDataset(Dataset[dict[str, Any]]):
    """The tiles of a dataset version (of some folds), one item per tile."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        folds: Sequence[int] | None = None,
        *,
        label_sets: bool = False,
    ) -> None:
        self.tiles_path, self.root = _locate(Path(path))
        info_path = self.root / INFO_FILE
        self.info: dict[str, Any] = (
            json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
        )
        handle = pq.ParquetFile(self.tiles_path, memory_map=True)
        sizes = [handle.metadata.row_group(k).num_rows for k in range(handle.num_row_groups)]
        self._groups = np.repeat(np.arange(len(sizes)), sizes)
        self._offsets = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0)
        meta = handle.read(columns=META_COLUMNS).to_pandas()
        available = sorted(int(f) for f in meta["fold"].unique())
        if folds is not None:
            unknown = sorted(set(map(int, folds)) - set(available))
            if unknown:
                raise UserInputError(
                    f"{self.tiles_path}: fold(s) {unknown} are not folds of this dataset "
                    f"(folds: {available})"
                )
            keep = meta["fold"].isin(list(map(int, folds))).to_numpy()
        else:
            keep = np.ones(len(meta), dtype=bool)
        self.rows = np.flatnonzero(keep)
        self.meta = meta.iloc[self.rows].reset_index(drop=True)
        self._records: list[dict[str, Any]] = self.meta.to_dict("records")
        self.folds = available
        self.label_sets = label_sets
        self._sets: dict[str, dict[int, int]] = self._read_sets() if label_sets else {}
        self._pid: int | None = None
        self._handle: pq.ParquetFile | None = None

    @property
    def classes(self) -> list[dict[str, Any]]:
        """The dataset's classes (index, id, name, colour) from dataset.json."""
        return list(self.info.get("classes", []))

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self) -> pq.ParquetFile:
        if self._handle is None or self._pid != os.getpid():
            self._handle = pq.ParquetFile(self.tiles_path, memory_map=True)
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"tile {index} of {len(self)}")
        row = int(self.rows[index])
        table = self._file().read_row_group(int(self._groups[row]), columns=PIXEL_COLUMNS)
        at = int(self._offsets[row])
        meta = self._records[index]
        inst = decode_map(table.column("inst_map")[at].as_py()).astype(np.int32)
        item: dict[str, Any] = {
            "image": decode_rgb(table.column("image")[at].as_py()),
            "inst_map": inst,
            "type_map": decode_map(table.column("type_map")[at].as_py()).astype(np.uint8),
            "tile_id": str(meta["tile_id"]),
            "slide_id": str(meta["slide_id"]),
            "indication": str(meta["indication"]),
            "fold": int(meta["fold"]),
            "mpp": float(meta["mpp"]),
            "index": int(index if index >= 0 else len(self) + index),
        }
        if self.label_sets:
            item["set_map"] = self._set_map(str(meta["tile_id"]), inst)
        return item

    def _read_sets(self) -> dict[str, dict[int, int]]:
        path = self.root / NUCLEI_FILE
        wanted = set(self.meta["tile_id"])
        table = pq.read_table(
            path,
            columns=["tile_id", "nucleus_id", "labels", "type_index"],
            filters=[("type_index", "=", IGNORE_TYPE)],
        ).to_pandas()
        sets: dict[str, dict[int, int]] = {}
        for row in table.itertuples(index=False):
            if row.tile_id not in wanted:
                continue
            bits = 0
            for label in row.labels:
                if label != "unknown":
                    bits |= 1 << class_index(label)
            sets.setdefault(str(row.tile_id), {})[int(row.nucleus_id)] = bits
        return sets

    def _set_map(self, tile_id: str, inst: NDArray[np.int32]) -> NDArray[np.int32]:
        found = self._sets.get(tile_id, {})
        lut = np.zeros(int(inst.max()) + 1 if inst.size else 1, dtype=np.int64)
        for nucleus, bits in found.items():
            if nucleus < len(lut):
                lut[nucleus] = bits
        return lut[inst].astype(np.int32)

    def class_counts(self) -> NDArray[np.int64]:
        """Nuclei of each class per tile, (n_tiles, n_classes) in `classes` order (the
        input of CellViT's oversampling weights)."""
        indices = [int(c["index"]) for c in self.classes]
        table = pq.read_table(self.root / NUCLEI_FILE, columns=["tile_id", "type_index"])
        frame = table.to_pandas()
        position = {t: k for k, t in enumerate(self.meta["tile_id"])}
        counts = np.zeros((len(self), len(indices)), dtype=np.int64)
        column = {idx: k for k, idx in enumerate(indices)}
        rows = frame["tile_id"].map(position)
        cols = frame["type_index"].map(column)
        ok = rows.notna() & cols.notna()
        np.add.at(counts, (rows[ok].astype(int).to_numpy(), cols[ok].astype(int).to_numpy()), 1)
        return counts
