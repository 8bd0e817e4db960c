"""Export a campaign: project + ontology, one PNG image per selected tile, annotators,
and (for validation sets) k annotators per tile, recorded in ``assignments.parquet`` and
as image metadata on the server. Re-running adds only what is missing.
"""

from __future__ import annotations

import logging
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_schema.assignments import ASSIGNMENTS
from data_schema.selection import SELECTION
from histocurate.cytomine import api
from histocurate.cytomine.client import Connection, CytomineCallError
from histocurate.errors import UserInputError
from histocurate.io import read_table, write_table

log = logging.getLogger(__name__)
ImageSource = Callable[[pd.Series], np.ndarray]


class ExportIncompleteError(UserInputError):
    """Some tiles could not be exported; the rest were (re-run export to retry them)."""


@dataclass
class ExportResult:
    """What an export did, for the run report."""

    project_id: int
    project_name: str
    project_created: bool
    uploaded: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    members_added: list[str] = field(default_factory=list)
    assignments: pd.DataFrame = field(default_factory=pd.DataFrame)
    retries: int = 0


def read_selected_tile_ids(path: Path) -> list[str]:
    """Tile ids of a selection table (the ``selection`` declaration, or any Parquet file
    with a ``tile_id`` column), in order, without repeats."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: selection not found; run `histocurate select` first")
    meta = {} if path.is_dir() else (pq.read_schema(path).metadata or {})
    if path.is_dir() or meta.get(b"histocurate.schema") == b"selection":
        ids = read_table(path, SELECTION, columns=["tile_id"])["tile_id"]
    else:
        table = pq.read_table(path)
        if "tile_id" not in table.column_names:
            raise UserInputError(f"{path}: no 'tile_id' column (columns: {table.column_names})")
        ids = table.column("tile_id").to_pandas()
    if ids.isna().any():
        raise UserInputError(f"{path}: {int(ids.isna().sum())} row(s) without tile_id")
    return list(dict.fromkeys(ids.astype(str)))


def draw_annotators(tile_id: str, annotators: Sequence[str], k: int | None, seed: int) -> list[str]:
    """The annotators of one tile: all of them, or ``k`` drawn at random.

    The draw depends only on (seed, tile_id, annotator pool), so re-running gives the same.
    """
    if k is None or k >= len(annotators):
        return list(annotators)
    rng = np.random.default_rng([seed, zlib.crc32(tile_id.encode())])
    picked = rng.choice(len(annotators), size=k, replace=False)
    return [annotators[i] for i in sorted(picked)]


def write_png(rgb: np.ndarray, path: Path, *, mpp: float) -> Path:
    """Save an RGB tile as PNG whose pHYs chunk records the resolution (``mpp`` um/px)."""
    from PIL import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (h, w, 3) array, got {rgb.dtype} {rgb.shape}")
    dpi = 25400.0 / mpp
    Image.fromarray(rgb).save(path, format="PNG", dpi=(dpi, dpi))
    return path


def _default_source(tile: pd.Series) -> np.ndarray:
    from histocurate.slides import read_tile

    return read_tile(tile)


def export_campaign(
    conn: Connection,
    *,
    project: str,
    tile_ids: Sequence[str],
    tiles: pd.DataFrame,
    annotators: Sequence[str],
    k: int | None = None,
    seed: int = 0,
    assignments_path: Path | None = None,
    image_source: ImageSource | None = None,
) -> ExportResult:
    """Find or create ``project`` and bring it up to date with the selection.

    ``tiles`` holds at least the selected tiles' rows (``tile_id``, ``tile_mpp``);
    ``image_source(row)`` gives a tile's RGB pixels (default: `histocurate.slides.read_tile`).
    """
    if len(set(annotators)) != len(annotators):
        raise UserInputError(f"annotators listed twice: {sorted(annotators)}")
    if k is not None and not 1 <= k <= len(annotators):
        raise UserInputError(f"k per tile = {k} but there are {len(annotators)} annotator(s)")
    by_id = tiles.drop_duplicates("tile_id").set_index("tile_id", drop=False)
    unknown = [t for t in tile_ids if t not in by_id.index]
    if unknown:
        raise UserInputError(
            f"{len(unknown)} selected tile(s) are not in the tiles table, e.g. {unknown[:3]}"
        )
    user_ids = {name: api.find_user(conn, name) for name in annotators}  # fails fast on typos
    info, created = api.ensure_project(conn, project)
    result = ExportResult(info.id, info.name, created)
    added = api.ensure_members(conn, info.id, list(user_ids.values()))
    result.members_added = [n for n, uid in user_ids.items() if uid in added]

    previous = _previous_assignments(assignments_path, project)
    storage = api.own_storage(conn)
    images = api.project_images(conn, info.id)
    source = image_source or _default_source
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="histocurate-export-") as tmp:
        for tile_id in tile_ids:
            name = f"{tile_id}.png"
            try:
                image = images.get(name)
                if image is None:
                    tile: pd.Series = by_id.loc[tile_id]  # type: ignore[assignment]
                    png = write_png(source(tile), Path(tmp) / name, mpp=float(tile["tile_mpp"]))
                    image = api.upload_image(conn, png, storage_id=storage, project_id=info.id)
                    png.unlink()
                    result.uploaded.append(tile_id)
                else:
                    result.already_there.append(tile_id)
                chosen = previous.get(tile_id) or draw_annotators(tile_id, annotators, k, seed)
                api.set_image_property(conn, image, api.TILE_KEY, tile_id)
                api.set_image_property(conn, image, api.ASSIGNMENT_KEY, ",".join(chosen))
            except (CytomineCallError, UserInputError, ValueError, OSError) as exc:
                if isinstance(exc, CytomineCallError) and exc.transient:
                    raise  # the server is failing: stop here, a re-run resumes
                result.failed[tile_id] = str(exc)
                log.warning("tile %s not exported: %s", tile_id, exc)
                continue
            rows += [
                {"project": project, "project_id": info.id, "tile_id": tile_id,
                 "image_id": int(image.id), "annotator": who, "k": len(chosen)}
                for who in chosen
            ]  # fmt: skip
    result.assignments = pd.DataFrame(rows, columns=ASSIGNMENTS.column_names)
    if assignments_path is not None:
        _write_assignments(assignments_path, project, result.assignments)
    result.retries = conn.retries
    if result.failed:
        listed = "; ".join(f"{t}: {why}" for t, why in list(result.failed.items())[:5])
        raise ExportIncompleteError(
            f"{len(result.failed)} of {len(tile_ids)} tile(s) were not exported ({listed}); "
            "the others are on Cytomine; fix the cause and re-run export"
        )
    return result


def _previous_assignments(path: Path | None, project: str) -> dict[str, list[str]]:
    if path is None or not Path(path).exists():
        return {}
    table = read_table(path, ASSIGNMENTS)
    table = table[table["project"] == project]
    return {str(t): list(g["annotator"]) for t, g in table.groupby("tile_id", sort=False)}


def _write_assignments(path: Path, project: str, rows: pd.DataFrame) -> None:
    frames = [rows]
    if Path(path).exists():
        old = read_table(path, ASSIGNMENTS)
        keep = old[(old["project"] != project) | ~old["tile_id"].isin(rows["tile_id"])]
        frames.insert(0, keep)
    merged = (
        pd.concat([f for f in frames if len(f)], ignore_index=True)
        if any(len(f) for f in frames)
        else rows
    )
    merged = merged.sort_values(["project", "tile_id", "annotator"], kind="stable")
    write_table(merged.reset_index(drop=True), path, ASSIGNMENTS)


def load_assignments(path: Path, project: str) -> pd.DataFrame:
    """Rows of ``assignments.parquet`` for one project (empty frame if none)."""
    if not Path(path).exists():
        return pd.DataFrame(columns=ASSIGNMENTS.column_names)
    table = read_table(path, ASSIGNMENTS)
    return table[table["project"] == project].reset_index(drop=True)
