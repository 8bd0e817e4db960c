"""The extraction loop: tiles -> torch DataLoader (worker processes read) -> encoder -> files.

One loader streams the tiles of every pending slide in order; worker processes read
pixels with `histocurate.slides.read_tile` (each worker opens and caches its own slide
handles) and run the encoder's preprocessor; the main process encodes each batch and
writes a slide's file as soon as its last tile is encoded. A tile that cannot be read,
a batch that fails to encode, or non-finite features fail that slide only: it is reported
and the others go on. Slides whose file exists are skipped (resume), unless ``force``.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from histocurate.errors import UserInputError
from histocurate.features.base import Encoder, Preprocessor
from histocurate.features.store import write_slide_features
from histocurate.io import Provenance, partition_path, read_provenance
from histocurate.runs import ItemOutcome

TileReader = Callable[[Mapping[str, Any]], np.ndarray]
READ_COLUMNS = ("tile_id", "slide_id", "slide_path", "x", "y", "read_level", "read_size", "tile_px")


def _default_reader(row: Mapping[str, Any]) -> np.ndarray:
    from histocurate.slides import read_tile

    return read_tile(row)


Item = tuple[int, torch.Tensor | None, str, bool]


class TileDataset(Dataset[Item]):
    """Item ``i``: (i, preprocessed tile or None, error text, error is the input's fault).
    Never raises for a bad tile, so that one corrupt region does not stop the loader."""

    def __init__(
        self, rows: Sequence[Mapping[str, Any]], preprocess: Preprocessor, reader: TileReader
    ) -> None:
        self.rows = rows
        self.preprocess = preprocess
        self.reader = reader

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Item:
        row = self.rows[index]
        try:
            return index, self.preprocess(self.reader(row)), "", False
        except Exception as exc:  # reported per slide, with the tile named
            text = f"tile {row['tile_id']}: {type(exc).__name__}: {exc}"
            return index, None, text, isinstance(exc, UserInputError | OSError)


Batch = tuple[np.ndarray, torch.Tensor | None, dict[int, tuple[str, bool]]]


def collate(items: list[Item]) -> Batch:
    """Stack the tiles that were read; keep the errors of the others by index."""
    ok = [(i, x) for i, x, _, _ in items if x is not None]
    errors = {i: (err, bad_input) for i, _, err, bad_input in items if err}
    stacked = torch.stack([x for _, x in ok]) if ok else None
    return np.asarray([i for i, _ in ok], dtype=np.int64), stacked, errors


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers read and resize; the main process owns the cores


def loader_workers(requested: int) -> int:
    """Daemonic processes (Dask workers, Prefect's) cannot start children: use none there."""
    return 0 if multiprocessing.current_process().daemon else requested


@dataclass
class _SlideState:
    slide_id: str
    start: int
    count: int
    remaining: int
    values: np.ndarray
    error: str = ""
    input_error: bool = False
    started: float = 0.0


def embed_tile_table(
    tiles: pd.DataFrame,
    encoder: Encoder,
    out_dir: Path,
    *,
    batch_size: int = 64,
    num_workers: int = 2,
    force: bool = False,
    slide_ids: Sequence[str] | None = None,
    reader: TileReader | None = None,
    provenance: Mapping[str, Provenance] | None = None,
    progress: Callable[[int], None] | None = None,
    on_slide: Callable[[ItemOutcome], None] | None = None,
) -> list[ItemOutcome]:
    """Embed every slide of ``tiles`` (a tiles table) into ``out_dir``; one outcome per slide.

    ``slide_ids`` fixes the slides and their order (a slide without tiles gets an empty
    file, so that it counts as done); by default, the slides of ``tiles``.
    ``provenance`` (per slide) is stored in each file; a file that exists is skipped only
    when it holds the same one (always, when ``provenance`` is None).
    ``progress(n)`` is called with the number of tiles just processed; ``on_slide`` with each
    outcome as soon as it is known.
    """
    reader = reader or _default_reader
    outcomes: list[ItemOutcome] = []

    def report(outcome: ItemOutcome) -> None:
        outcomes.append(outcome)
        if on_slide is not None:
            on_slide(outcome)

    missing = [c for c in READ_COLUMNS if c not in tiles.columns]
    if missing:
        raise ValueError(f"tiles table lacks column(s) {missing}")
    states: list[_SlideState] = []
    rows: list[dict[str, Any]] = []
    groups = {str(k): g for k, g in tiles.groupby("slide_id", sort=False)}
    order = list(groups) if slide_ids is None else [str(s) for s in slide_ids]
    for slide_id in order:
        group = groups.get(slide_id, tiles.iloc[:0])
        path = partition_path(out_dir, slide_id)
        wanted = dict((provenance or {}).get(slide_id, {}))
        if not force and path.exists() and (provenance is None or read_provenance(path) == wanted):
            report(ItemOutcome(slide_id, "skipped"))
            continue
        values = np.zeros((len(group), encoder.dim), dtype=np.float32)
        states.append(_SlideState(slide_id, len(rows), len(group), len(group), values))
        rows.extend(
            {str(k): v for k, v in r.items()} for r in group[list(READ_COLUMNS)].to_dict("records")
        )
    owner = np.repeat(np.arange(len(states)), [s.count for s in states]).astype(np.int64)

    def finish(state: _SlideState) -> None:
        seconds = time.perf_counter() - state.started if state.started else 0.0
        if state.error:
            report(
                ItemOutcome(
                    state.slide_id,
                    "failed",
                    count=state.count,
                    seconds=seconds,
                    error=state.error,
                    input_error=state.input_error,
                )
            )
            return
        ids = [str(r["tile_id"]) for r in rows[state.start : state.start + state.count]]
        try:
            write_slide_features(
                out_dir,
                state.slide_id,
                encoder.name,
                ids,
                state.values,
                provenance=(provenance or {}).get(state.slide_id),
            )
        except Exception as exc:  # non-finite features, disk full: this slide fails
            error = f"{type(exc).__name__}: {exc}"
            report(
                ItemOutcome(
                    state.slide_id, "failed", count=state.count, seconds=seconds, error=error
                )
            )
            return
        report(ItemOutcome(state.slide_id, "done", count=state.count, seconds=seconds))
        state.values = np.zeros((0, encoder.dim), dtype=np.float32)  # free it

    for state in states:
        if state.count == 0:
            finish(state)
    if not rows:
        return outcomes
    workers = loader_workers(num_workers)
    device = getattr(encoder, "device", torch.device("cpu"))
    loader = DataLoader(
        TileDataset(rows, encoder.preprocessor(), reader),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    done = 0
    pending = [s for s in states if s.remaining]
    if pending:
        pending[0].started = time.perf_counter()
    for indices, batch, errors in loader:
        for index, (message, bad_input) in errors.items():
            state = states[owner[index]]
            if not state.error:
                state.error, state.input_error = message, bad_input
        if batch is not None and len(indices):
            try:
                feats = encoder.encode(batch)
                if feats.shape != (len(indices), encoder.dim):
                    raise RuntimeError(f"encoder returned shape {feats.shape}")
            except Exception as exc:
                for s in {int(owner[i]) for i in indices}:
                    states[s].error = states[s].error or f"encoding failed: {exc}"
            else:
                for k, index in enumerate(indices):
                    state = states[owner[index]]
                    state.values[index - state.start] = feats[k]
        n = len(indices) + len(errors)
        for index in [*indices.tolist(), *errors]:
            state = states[owner[index]]
            state.remaining -= 1
            if state.remaining == 0:
                finish(state)
                following = int(owner[index]) + 1
                if following < len(states):  # the next slide's clock starts now
                    states[following].started = time.perf_counter()
        done += n
        if progress is not None:
            progress(n)
    return outcomes
