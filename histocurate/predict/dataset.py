"""Prediction on the tiles of a dataset version, stored beside it for `histocurate evaluate`.

Each tile is one input (no stitching: a tile's edges are the dataset's), padded by
reflection to a multiple of the encoder's patch and the padding cropped from the outputs.
A tile at another resolution than the model's is resampled to it within the rules of
`histocurate.predict.windows.plan_resolution` and its cells mapped back to tile pixels.
The result is ``datasets/<name>/<version>/predictions/<model>/cells.parquet`` (table
``tile_cells``), with the tiles whose outputs held NaN named in the outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_schema import TILE_CELLS
from histocurate.dataset.maps import decode_rgb
from histocurate.dataset.store import DatasetVersion
from histocurate.imaging import resize_rgb
from histocurate.io import write_table
from histocurate.predict.engine import Engine
from histocurate.predict.models import LoadedModel, load_model
from histocurate.predict.outputs import class_labels, labels_of, list_column
from histocurate.predict.slide import SlideJob, shared_executor
from histocurate.predict.store import dataset_predictions, is_fresh
from histocurate.predict.windows import plan_resolution
from histocurate.predict.worker import Placement, WindowCells
from histocurate.runs import ItemOutcome, Progress


def _pad(rgb: np.ndarray, patch: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    ph, pw = -h % patch, -w % patch
    if not (ph or pw):
        return rgb
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode=mode)  # type: ignore[call-overload]


def dataset_items(
    version: DatasetVersion, loaded: LoadedModel, notes: list[str]
) -> Iterator[tuple[str, np.ndarray, Placement]]:
    """(tile_id, padded model-resolution image, placement back to tile pixels)."""
    handle = pq.ParquetFile(version.tiles)
    said: set[float] = set()
    for batch in handle.iter_batches(columns=["tile_id", "mpp", "image"], batch_size=16):
        for tile_id, mpp, image in zip(
            *(batch.column(k).to_pylist() for k in range(3)), strict=True
        ):
            res = plan_resolution(
                float(mpp), loaded.info.mpp, slide=f"tile {tile_id}", checkpoint=loaded.path.name
            )
            if res.note and float(mpp) not in said:
                said.add(float(mpp))
                notes.append(f"{version.spec}: {res.note.split(': ', 1)[-1]}")
            rgb = decode_rgb(image)
            h, w = rgb.shape[:2]
            if res.scale != 1.0:
                rgb = resize_rgb(rgb, (max(1, round(h / res.scale)), max(1, round(w / res.scale))))
            crop = (rgb.shape[0], rgb.shape[1])
            scale = (w / crop[1], h / crop[0])  # x, y: rounded apart on a non-square tile
            yield tile_id, _pad(rgb, loaded.patch), Placement((0.0, 0.0), scale, crop)


def tile_cells_table(parts: list[WindowCells], labels: list[str | None]) -> pa.Table:
    """The ``tile_cells`` rows of every tile's nuclei."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return TILE_CELLS.to_arrow().empty_table()
    tile = np.concatenate([np.full(len(p), p.key, dtype=object) for p in parts])
    cell_id = np.concatenate([np.arange(1, len(p) + 1) for p in parts])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    type_index = cat("type_index").astype(np.int32)
    columns = {
        "tile_id": pa.array(tile.tolist(), pa.string()),
        "cell_id": pa.array(cell_id.astype(np.int64)),
        "x": pa.array(cat("x").astype(np.float64)),
        "y": pa.array(cat("y").astype(np.float64)),
        "polygon": pa.array(cat("wkb").tolist(), pa.binary()),
        "area_px": pa.array(cat("area").astype(np.float64)),
        "label": pa.array(labels_of(type_index, labels).tolist(), pa.string()),
        "type_index": pa.array(type_index),
        "confidence": pa.array(cat("confidence").astype(np.float32)),
        "probabilities": list_column(cat("probs")),
    }
    names = TILE_CELLS.column_names
    return pa.table([columns[c] for c in names], names=names)


def predict_dataset(
    version: DatasetVersion, *, job: SlideJob, progress: Progress | None = None
) -> ItemOutcome:
    """Predict every tile of ``version``; skipped when its prediction is fresh."""
    started = time.perf_counter()
    out = dataset_predictions(version.path, job.model)
    loaded = load_model(job.checkpoint, job.settings.device)
    info = version.info()
    provenance = {
        "checkpoint": loaded.digest,
        "dataset": str(info.get("content_hash", version.version)),
        "settings": job.settings_digest(),
        "classes": json.dumps(list(loaded.info.classes)),
    }
    if not job.force and is_fresh(out, provenance, job.checkpoint):
        return ItemOutcome(version.spec, "skipped", extra={"path": str(out)})
    n_tiles = pq.ParquetFile(version.tiles).metadata.num_rows
    if progress is not None:
        progress.start(n_tiles, f"predicting {version.spec}")
    notes: list[str] = []
    s = job.settings
    mpp = loaded.info.mpp or float(info.get("mpp") or 0.25)
    engine = Engine(
        loaded,
        executor=shared_executor(s),
        batch_size=s.batch_size,
        precision=s.precision,
        mpp=mpp,
        options=job.options(mpp),
    )
    parts: list[WindowCells] = []
    for result in engine.run(dataset_items(version, loaded, notes)):
        parts.append(result)
        if progress is not None:
            progress.advance(1)
    nan = [str(p.key) for p in parts if p.error]
    table = tile_cells_table(parts, class_labels(loaded.info.classes))
    write_table(table, out, TILE_CELLS, provenance=provenance)
    extra: dict[str, Any] = {
        "tiles": len(parts),
        "nan": len(nan),
        "path": str(out),
        "nan_windows": [f"tile {t}" for t in nan],
    }
    t = engine.timings
    extra.update(
        forward=t.forward,
        post_wait=t.postprocess_wait,
        post_cpu=t.postprocess_cpu,
        read_wait=t.read_wait,
    )
    if notes:
        extra["note"] = "; ".join(notes)
    return ItemOutcome(
        version.spec,
        "done",
        count=table.num_rows,
        seconds=time.perf_counter() - started,
        extra=extra,
    )


def dataset_prediction_path(version: DatasetVersion, model: str) -> Path:
    return dataset_predictions(version.path, model)
