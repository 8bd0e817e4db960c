"""The assignments table: who annotates which exported tile, and the pixels they were shown.

One row per (project, tile, annotator), written by the export one project at a time; the
rows of other projects are never touched.

>>> draw_annotators("t1", ["a", "b", "c", "d"], 2, seed=0) == draw_annotators(
...     "t1", ["a", "b", "c", "d"], 2, seed=0)
True
>>> draw_annotators("t1", ["a", "b"], None, seed=0)
['a', 'b']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from data_schema.assignments import ASSIGNMENTS
from histocurate.io import read_table, write_table
from histocurate.seeding import rng_for


def draw_annotators(tile_id: str, annotators: Sequence[str], k: int | None, seed: int) -> list[str]:
    """The annotators of one tile: all of them, or ``k`` drawn at random.

    The draw depends only on (seed, tile_id, annotator pool), so re-running gives the same.
    """
    if k is None or k >= len(annotators):
        return list(annotators)
    rng = rng_for(seed, tile_id)  # the same stream as default_rng([seed, crc32(tile_id)])
    picked = rng.choice(len(annotators), size=k, replace=False)
    return [annotators[i] for i in sorted(picked)]


def load_assignments(path: Path, project: str) -> pd.DataFrame:
    """Rows of ``assignments.parquet`` for one project (an empty frame if none)."""
    if not Path(path).exists():
        return ASSIGNMENTS.to_arrow().empty_table().to_pandas()
    table = read_table(path, ASSIGNMENTS)
    return table[table["project"] == project].reset_index(drop=True)


def write_assignments(path: Path, project: str, rows: pd.DataFrame, *, replaced: set[str]) -> None:
    """Replace the rows of ``project`` for the tiles in ``replaced`` by ``rows``; keep every
    other row (other projects, and this project's tiles not in ``replaced``)."""
    frames = [rows]
    if Path(path).exists():
        old = read_table(path, ASSIGNMENTS)
        frames.insert(0, old[(old["project"] != project) | ~old["tile_id"].isin(replaced)])
    kept = [f for f in frames if len(f)]
    merged = pd.concat(kept, ignore_index=True) if kept else rows
    merged = merged.sort_values(["project", "tile_id", "annotator"], kind="stable")
    write_table(merged.reset_index(drop=True), path, ASSIGNMENTS)
