"""The segment stage: points.parquet -> masks.parquet (one file per tile), resumable.

Each annotator's clicks of a tile are segmented together: their other clicks are the
exclusion map, and overlaps are resolved among them (another annotator's click on the same
nucleus is another mask of that nucleus, for the consensus stage to match). The clicks of
several tiles share NuClick batches.

A tile is up to date when its file holds the same clicks (id, position, label) drawn by
the same segmenter; it is skipped unless ``force``. Files of tiles that lost all their
clicks are removed. Clicks outside their tile are left out and reported.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from data_schema import MASKS, POINTS, TILES
from histocurate.config import HistocurateConfig
from histocurate.errors import SchemaError, UserInputError
from histocurate.io import (
    atomic_write_text,
    list_partitions,
    partition_path,
    read_partition,
    read_table,
    write_partition,
)
from histocurate.segment.overlay import draw_masks
from histocurate.segment.segmenters import Segmenter, make_segmenter, segment_images
from histocurate.workspace import Workspace

log = logging.getLogger(__name__)
KEY_COLUMNS = ["annotation_id", "x", "y", "label"]
ReadTile = Callable[[Any], np.ndarray]


@dataclass
class SegmentRun:
    """What one run did (also written to reports/segment/summary.json)."""

    segmenter: str
    tiles_done: list[str] = field(default_factory=list)
    tiles_skipped: list[str] = field(default_factory=list)
    tiles_removed: list[str] = field(default_factory=list)
    tiles_missing: list[str] = field(default_factory=list)  # in points, not in tiles
    masks: int = 0
    fallback: int = 0
    merged: int = 0
    outside: list[int] = field(default_factory=list)  # annotation ids outside their tile
    seconds: float = 0.0
    overlays: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentPlan:
    """Tiles to segment (with their points), tiles up to date, stale files."""

    pending: list[str]
    skipped: list[str]
    stale: list[str]
    missing: list[str]
    points: pd.DataFrame
    tiles: pd.DataFrame


def segmenter_for(config: HistocurateConfig, name: str | None = None) -> Segmenter:
    section = config.segment
    checkpoint = config.resolve(section.checkpoint) if section.checkpoint else None
    return make_segmenter(
        name or section.segmenter,
        checkpoint,
        device=section.device,
        batch_size=section.batch_size,
        threshold=section.threshold,
    )


def _same_clicks(existing: pd.DataFrame, points: pd.DataFrame, segmenter: str) -> bool:
    if existing.empty or set(existing["segmenter"]) != {segmenter}:
        return False
    a = existing[KEY_COLUMNS].sort_values("annotation_id").reset_index(drop=True)
    b = points[KEY_COLUMNS].sort_values("annotation_id").reset_index(drop=True)
    return a.equals(b)


def plan_segment(
    config: HistocurateConfig,
    segmenter: str,
    *,
    force: bool = False,
    tile_ids: Sequence[str] | None = None,
) -> SegmentPlan:
    ws = Workspace.of(config)
    points = read_table(ws.points, POINTS)
    if not ws.tiles.exists():
        raise UserInputError(f"{ws.tiles}: no tiles table; run `histocurate tile` first")
    tiles = read_table(ws.tiles, TILES).drop_duplicates("tile_id").set_index("tile_id", drop=False)
    if tile_ids is not None:
        points = points[points["tile_id"].isin(set(tile_ids))]
    wanted = sorted(points["tile_id"].unique())
    missing = [t for t in wanted if t not in tiles.index]
    if missing:
        log.warning("%d tile(s) of points.parquet are not in the tiles table", len(missing))
    pending, skipped = [], []
    done = set(list_partitions(ws.masks))
    for tile_id in (t for t in wanted if t in tiles.index):
        if not force and tile_id in done:
            try:
                existing = read_partition(
                    ws.masks, tile_id, MASKS, columns=[*KEY_COLUMNS, "segmenter"]
                )
            except SchemaError:
                existing = pd.DataFrame()
            tile_points = points[points["tile_id"] == tile_id]
            side = float(tiles.loc[tile_id, "tile_px"])
            inside = tile_points["x"].between(0, side, inclusive="left") & tile_points["y"].between(
                0, side, inclusive="left"
            )
            if _same_clicks(existing, tile_points[inside], segmenter):
                skipped.append(tile_id)
                continue
        pending.append(tile_id)
    stale = sorted(done - set(wanted)) if tile_ids is None else []
    return SegmentPlan(pending, skipped, stale, missing, points, tiles)


def _tile_rows(tile_id: str, entries: list[tuple[str, Any, pd.DataFrame]]) -> pd.DataFrame:
    """Rows of one tile's masks from its per-annotator results."""
    frames = []
    for annotator, res, group in entries:
        geoms = res.polygons
        frames.append(
            pd.DataFrame(
                {
                    "annotation_id": group["annotation_id"].to_numpy(),
                    "tile_id": tile_id,
                    "annotator": annotator,
                    "x": group["x"].to_numpy(),
                    "y": group["y"].to_numpy(),
                    "label": group["label"].to_numpy(),
                    "polygon": shapely.to_wkb(np.asarray(geoms, dtype=object)),
                    "segmenter": res.segmenter,
                    "area": shapely.area(np.asarray(geoms, dtype=object)),
                    "fallback": res.fallback,
                }
            )
        )
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MASKS.column_names)
    )


def segment_tiles(
    config: HistocurateConfig,
    tile_ids: Sequence[str],
    *,
    segmenter: Segmenter,
    plan: SegmentPlan,
    read_tile: ReadTile | None = None,
    run: SegmentRun | None = None,
) -> SegmentRun:
    """Segment ``tile_ids`` (all annotators' clicks, shared batches) and write their files."""
    if read_tile is None:
        from histocurate.slides import read_tile as default_read_tile

        read_tile = default_read_tile
    ws = Workspace.of(config)
    run = run or SegmentRun(segmenter=segmenter.name)
    chunk = config.segment.tiles_per_batch
    for start in range(0, len(tile_ids), chunk):
        ids = list(tile_ids[start : start + chunk])
        images, pts, mpps, owners = [], [], [], []
        for tile_id in ids:
            row = plan.tiles.loc[tile_id]
            image = np.asarray(read_tile(row))
            tile_points = plan.points[plan.points["tile_id"] == tile_id]
            x, y = tile_points["x"].to_numpy(), tile_points["y"].to_numpy()
            inside = (x >= 0) & (x < image.shape[1]) & (y >= 0) & (y < image.shape[0])
            run.outside.extend(int(a) for a in tile_points["annotation_id"].to_numpy()[~inside])
            tile_points = tile_points[inside]
            for annotator, group in tile_points.groupby("annotator", sort=True):
                images.append(image)
                pts.append(group[["x", "y"]].to_numpy(np.float64))
                mpps.append(float(plan.tiles.at[tile_id, "tile_mpp"]))  # type: ignore[arg-type]
                owners.append((tile_id, str(annotator), group))
        results = segment_images(images, pts, segmenter=segmenter, mpp=mpps)
        result_of: dict[str, list[tuple[str, Any, pd.DataFrame]]] = {t: [] for t in ids}
        for (tile_id, annotator, group), res in zip(owners, results, strict=True):
            result_of[tile_id].append((annotator, res, group))
            run.fallback += res.n_fallback
            run.merged += int(res.merged.sum())
        for tile_id in ids:
            rows = _tile_rows(tile_id, result_of[tile_id])
            write_partition(rows, ws.masks, tile_id, MASKS)
            run.masks += len(rows)
            run.tiles_done.append(tile_id)
            if len(run.overlays) < config.segment.overlays and len(rows):
                run.overlays.append(
                    str(_overlay(ws, tile_id, plan.tiles.loc[tile_id], rows, read_tile))
                )
    return run


def _overlay(
    ws: Workspace, tile_id: str, row: Any, rows: pd.DataFrame, read_tile: ReadTile
) -> Path:
    out = ws.reports / "segment" / "overlays" / f"{tile_id}.png"
    return draw_masks(np.asarray(read_tile(row)), rows, out)


def run_segment(
    config: HistocurateConfig,
    *,
    segmenter: Segmenter | None = None,
    force: bool = False,
    tile_ids: Sequence[str] | None = None,
    read_tile: ReadTile | None = None,
    progress: Callable[[int], None] | None = None,
) -> SegmentRun:
    """Run the whole stage in this process; returns (and writes) its summary."""
    began = time.perf_counter()
    segmenter = segmenter or segmenter_for(config)
    plan = plan_segment(config, segmenter.name, force=force, tile_ids=tile_ids)
    ws = Workspace.of(config)
    run = SegmentRun(
        segmenter=segmenter.name, tiles_skipped=plan.skipped, tiles_missing=plan.missing
    )
    for tile_id in plan.stale:
        partition_path(ws.masks, tile_id).unlink(missing_ok=True)
        run.tiles_removed.append(tile_id)
    chunk = config.segment.tiles_per_batch
    for start in range(0, len(plan.pending), chunk):
        ids = plan.pending[start : start + chunk]
        segment_tiles(config, ids, segmenter=segmenter, plan=plan, read_tile=read_tile, run=run)
        if progress:
            progress(len(ids))
    run.seconds = time.perf_counter() - began
    write_summary(ws, run)
    return run


def write_summary(ws: Workspace, run: SegmentRun) -> Path:
    path = ws.reports / "segment" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(run.as_dict(), indent=1))
    return path
