"""The staged parts of a version joined into its tables, then described (dataset.json, card).

``tiles.parquet`` is written one row group per tile, tiles grouped by fold (a reader of one
fold reads contiguous row groups), with the PNG columns stored uncompressed (they are
compressed already) and without statistics; ``nuclei.parquet`` in large row groups, zstd.
Both carry the dataset name and version in their provenance.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_schema import DATASET_NUCLEI, DATASET_TILES
from histocurate.dataset.classes import IGNORE_TYPE, class_table
from histocurate.dataset.store import (
    CARD_FILE,
    INFO_FILE,
    NUCLEI_FILE,
    PLOT_FILE,
    TILES_FILE,
    file_digest,
    write_info,
)
from histocurate.dataset.tilework import TileResult
from histocurate.io.tables import PROVENANCE_KEY, to_arrow

PARTS_DIR = "_parts"
BINARY_COLUMNS = ("image", "inst_map", "type_map")
META_COLUMNS = [c for c in DATASET_TILES.column_names if c not in BINARY_COLUMNS]
NUCLEI_SUMMARY_COLUMNS = [
    "tile_id",
    "label",
    "labels",
    "type_index",
    "n_annotators",
    "annotators",
    "source",
    "clipped",
    "contested",
]


PART_PREFIX = "part-"


def write_part(results: list[TileResult], parts: Path, key: str) -> tuple[Path, Path]:
    """The rows of a batch of tiles as two files of the staging folder, checked against the
    schemas (plain writes: the staging folder as a whole is what is published atomically)."""
    tiles = pd.DataFrame([r.row for r in results], columns=DATASET_TILES.column_names)
    frames = [r.nuclei for r in results if len(r.nuclei)]
    tiles_path = parts / f"{PART_PREFIX}{key}.tiles.parquet"
    nuclei_path = parts / f"{PART_PREFIX}{key}.nuclei.parquet"
    pq.write_table(
        to_arrow(tiles, DATASET_TILES, origin=str(tiles_path)), tiles_path, compression="none"
    )
    nuclei = (
        to_arrow(
            pd.concat(frames, ignore_index=True)[DATASET_NUCLEI.column_names],
            DATASET_NUCLEI,
            origin=str(nuclei_path),
        )
        if frames
        else DATASET_NUCLEI.to_arrow().empty_table()
    )
    pq.write_table(nuclei, nuclei_path)
    return tiles_path, nuclei_path


def _stamped(schema: pa.Schema, name: str, version: str) -> pa.Schema:
    import json

    meta = dict(schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps({"dataset": name, "version": version}).encode()
    return schema.with_metadata(meta)


def _parts(folder: Path, kind: str) -> list[Path]:
    return sorted(folder.glob(f"{PART_PREFIX}*.{kind}.parquet"))


def _tile_order(parts: list[Path]) -> list[tuple[Path, pd.DataFrame]]:
    ordered = []
    for path in parts:
        meta = pq.read_table(path, columns=["tile_id", "slide_id", "fold"]).to_pandas()
        meta = meta.assign(position=np.arange(len(meta))).sort_values(
            ["fold", "slide_id", "tile_id"]
        )
        if len(meta):
            ordered.append((path, meta))
    ordered.sort(key=lambda pm: (int(pm[1]["fold"].iloc[0]), str(pm[1]["slide_id"].iloc[0])))
    return ordered


def write_tables(tmp: Path, *, name: str, version: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the parts under ``tmp/_parts`` into ``tiles.parquet`` and ``nuclei.parquet``;
    returns the tiles' metadata and the nuclei's summary columns (in file order)."""
    parts = tmp / PARTS_DIR
    ordered = _tile_order(_parts(parts, "tiles"))
    schema = _stamped(DATASET_TILES.to_arrow(), name, version)
    compression = {c: ("none" if c in BINARY_COLUMNS else "zstd") for c in schema.names}
    stats = [c for c in schema.names if c not in BINARY_COLUMNS]
    metas = []
    with pq.ParquetWriter(
        tmp / TILES_FILE,
        schema,
        compression=compression,
        write_statistics=stats,
        use_dictionary=stats,
    ) as writer:
        for path, meta in ordered:
            table = to_arrow(pq.read_table(path), DATASET_TILES, origin=str(path))
            table = table.take(pa.array(meta["position"].to_numpy()))
            writer.write_table(table, row_group_size=1)
            metas.append(table.drop_columns(list(BINARY_COLUMNS)).to_pandas())
    tiles = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame(columns=META_COLUMNS)
    rank = {t: k for k, t in enumerate(tiles["tile_id"])}
    frames = [pq.read_table(p) for p in _parts(parts, "nuclei")]
    nuclei = pa.concat_tables(frames) if frames else DATASET_NUCLEI.to_arrow().empty_table()
    order = (
        pd.DataFrame(
            {
                "rank": [rank[t] for t in nuclei.column("tile_id").to_pylist()],
                "id": nuclei.column("nucleus_id").to_numpy(),
            }
        )
        .sort_values(["rank", "id"])
        .index.to_numpy()
    )
    nuclei = to_arrow(
        nuclei.take(pa.array(order, type=pa.int64())), DATASET_NUCLEI, origin=str(parts)
    )
    nuclei = nuclei.replace_schema_metadata(_stamped(nuclei.schema, name, version).metadata)
    pq.write_table(nuclei, tmp / NUCLEI_FILE, compression="zstd", row_group_size=131072)
    shutil.rmtree(parts)
    return tiles, nuclei.select(NUCLEI_SUMMARY_COLUMNS).to_pandas()


def _counts(frame: pd.DataFrame, by: str | None, labels: Sequence[str]) -> dict[str, Any]:
    determined = frame[frame["type_index"] != IGNORE_TYPE]
    if by is None:
        counts = determined["label"].value_counts()
        out = {lab: int(counts.get(lab, 0)) for lab in labels}
        out["undetermined"] = int((frame["type_index"] == IGNORE_TYPE).sum())
        return out
    return {str(k): _counts(g, None, labels) for k, g in frame.groupby(by, sort=True)}


def describe(
    tiles: pd.DataFrame,
    nuclei: pd.DataFrame,
    *,
    name: str,
    version: str,
    labels: Sequence[str],
    base: dict[str, Any],
    tmp: Path,
) -> dict[str, Any]:
    """``dataset.json``: the base entries of the caller plus counts and the content hash."""
    joined = nuclei.merge(tiles[["tile_id", "fold", "indication"]], on="tile_id", how="left")
    sizes = tiles.groupby(["width", "height"]).size()
    size_counts = {f"{k[0]}x{k[1]}": int(n) for k, n in cast(Any, sizes).items()}
    uniform = len(sizes) == 1 and sizes.index[0][0] == sizes.index[0][1]
    info: dict[str, Any] = {
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "content_hash": file_digest([tmp / TILES_FILE, tmp / NUCLEI_FILE]),
        **base,
        "classes": class_table(labels),
        "background_index": 0,
        "ignore_index": IGNORE_TYPE,
        "tile_size": int(sizes.index[0][0]) if uniform else None,
        "tile_sizes": size_counts,
        "counts": {
            "tiles": len(tiles),
            "nuclei": len(nuclei),
            "undetermined": int((nuclei["type_index"] == IGNORE_TYPE).sum()),
            "slides": int(tiles["slide_id"].nunique()),
            "indications": {str(k): int(v) for k, v in tiles["indication"].value_counts().items()},
            "per_class": _counts(joined, None, labels),
            "per_fold": _counts(joined, "fold", labels),
            "per_indication": _counts(joined, "indication", labels),
            "tiles_per_fold": {str(k): int(v) for k, v in tiles["fold"].value_counts().items()},
        },
        "rasterisation": {
            **base.get("rasterisation", {}),
            "contested_nuclei": int(nuclei["contested"].sum()),
            "clipped_nuclei": int(nuclei["clipped"].sum()),
        },
        "files": {"tiles": TILES_FILE, "nuclei": NUCLEI_FILE, "card": CARD_FILE, "plot": PLOT_FILE},
    }
    return info


def finish_version(
    tmp: Path, *, name: str, version: str, labels: Sequence[str], base: dict[str, Any]
) -> dict[str, Any]:
    """Tables, dataset.json, card and plot of a staged version (not yet published)."""
    from histocurate.dataset.card import render_card, save_class_plot

    tiles, nuclei = write_tables(tmp, name=name, version=version)
    info = describe(tiles, nuclei, name=name, version=version, labels=labels, base=base, tmp=tmp)
    save_class_plot(info, tmp / PLOT_FILE)
    (tmp / CARD_FILE).write_text(render_card(info, tiles, nuclei), encoding="utf-8")
    write_info(tmp / INFO_FILE, info)
    return info
