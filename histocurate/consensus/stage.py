"""The consensus stage: masks.parquet -> matching -> re-segmentation -> consensus.parquet.

Split so that the Prefect flow can shard it: `consensus_shard` (matching and
re-segmentation of some tiles; tiles are independent) and `finish_consensus` (labels over
the whole campaign, since Dawid-Skene learns each annotator from all their work; the table,
GeoJSON, overlays and the agreement report). `run_consensus` is both in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import shapely

from data_schema import ASSIGNMENTS, CONSENSUS, CONSENSUS_FATES, MASKS, TILES, TableSchema
from histocurate.config import HistocurateConfig
from histocurate.consensus.agreement import AgreementReport, agreement_report
from histocurate.consensus.core import apply_labels, build_consensus
from histocurate.consensus.export import draw_overlay, save_png, write_geojson
from histocurate.errors import SchemaError, UserInputError
from histocurate.io import atomic_write_text, read_table, write_table
from histocurate.segment.segmenters import segment_points
from histocurate.segment.stage import segmenter_for
from histocurate.workspace import Workspace

log = logging.getLogger(__name__)

MASK_COLUMNS = ["annotation_id", "tile_id", "annotator", "x", "y", "label", "polygon", "segmenter"]

SegmentFn = Callable[[np.ndarray, np.ndarray, float | None], Sequence[Any]]
"""(tile RGB image, (N, 2) x/y points, tile mpp) -> one polygon (shapely, WKB or None) per
point."""


@dataclass(slots=True)
class ConsensusRun:
    """What a consensus run wrote and found."""

    nuclei: pd.DataFrame
    report: AgreementReport
    table: Path
    geojson: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    resegmented: int = 0
    tiles_without_pixels: list[str] = field(default_factory=list)


def read_masks(workspace: Workspace) -> pd.DataFrame:
    """The segment stage's masks table (a folder of one file per tile)."""
    if not workspace.masks.exists():
        raise UserInputError(f"{workspace.masks}: no masks yet; run `histocurate segment` first")
    return read_table(workspace.masks, MASKS, columns=MASK_COLUMNS)


def read_tiles(workspace: Workspace) -> pd.DataFrame | None:
    """Tiles table indexed by tile_id (None when the workspace has none)."""
    if not workspace.tiles.exists():
        return None
    try:
        tiles = read_table(workspace.tiles, TILES)
    except SchemaError as exc:
        log.warning("tiles table unreadable, consensus keeps member masks: %s", exc)
        return None
    return tiles.drop_duplicates("tile_id").set_index("tile_id", drop=False)


def read_expected(workspace: Workspace) -> pd.DataFrame | None:
    """Cytomine assignments (tile_id, annotator), when the export stage recorded them."""
    if not workspace.assignments.exists():
        return None
    try:
        return read_table(workspace.assignments, ASSIGNMENTS, columns=["tile_id", "annotator"])
    except SchemaError as exc:
        log.warning("assignments unreadable, zero-click annotators not reported: %s", exc)
        return None


def make_segment_fn(config: HistocurateConfig) -> tuple[SegmentFn, str]:
    """The configured segmenter (the segment stage's) as ``(image, points) -> polygons``."""
    segmenter = segmenter_for(config)

    def segment(image: np.ndarray, points: np.ndarray, mpp: float | None) -> Sequence[Any]:
        return segment_points(image, points, segmenter=segmenter, mpp=mpp).polygons

    return segment, segmenter.name


def resegment(
    nuclei: pd.DataFrame,
    tiles: pd.DataFrame | None,
    segment: SegmentFn | None,
    *,
    segmenter_name: str | None,
    member_segmenter: pd.Series,
    read_tile: Callable[[Any], np.ndarray] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Add polygon (WKB), polygon_source, segmenter and area to core nuclei.

    Each tile's consensus centroids are segmented again (``segment``); where that is off,
    fails or gives nothing, the member mask that best overlaps the others is kept
    (``member_segmenter``: segmenter per annotation id). Returns the tiles whose pixels
    could not be read.
    """
    if read_tile is None:
        from histocurate.slides import read_tile as read_tile_fn

        read_tile = read_tile_fn
    geoms = nuclei["geometry"].to_numpy(dtype=object).copy()
    source = np.full(len(nuclei), "member", dtype=object)
    # Segmenter of a kept member mask: the members' (one segment run made them all).
    seg_name = np.array(
        [member_segmenter.get(int(m[0]), "unknown") for m in nuclei["members"]], dtype=object
    )
    missing: list[str] = []
    if segment is not None and len(nuclei):
        for tile_key, rows in nuclei.groupby("tile_id", sort=True).indices.items():
            tile_id = str(tile_key)
            if tiles is None or tile_id not in tiles.index:
                missing.append(str(tile_id))
                continue
            try:
                image = read_tile(tiles.loc[tile_id])
            except (UserInputError, OSError) as exc:
                log.warning("tile %s: cannot read pixels (%s); member masks kept", tile_id, exc)
                missing.append(str(tile_id))
                continue
            points = nuclei[["x", "y"]].to_numpy()[rows]
            mpp = (
                cast(float, tiles.at[tile_id, "tile_mpp"]) if "tile_mpp" in tiles.columns else None
            )
            polys = segment(image, points, mpp)
            for pos, poly in zip(rows, polys, strict=True):
                if isinstance(poly, bytes | bytearray | memoryview):
                    poly = shapely.from_wkb(bytes(poly))
                if poly is not None and not poly.is_empty and poly.area > 0:
                    geoms[pos] = poly
                    source[pos] = "resegmented"
                    seg_name[pos] = segmenter_name
    out = nuclei.copy()
    out["polygon"] = shapely.to_wkb(geoms)
    out["polygon_source"] = source
    out["segmenter"] = seg_name
    out["area"] = shapely.area(geoms)
    return out, sorted(missing)


def _member_segmenters(masks: pd.DataFrame) -> pd.Series:
    if "segmenter" in masks.columns:
        return pd.Series(masks["segmenter"].to_numpy(), index=masks["annotation_id"].astype(int))
    return pd.Series(dtype=object)


def write_frame(frame: pd.DataFrame, path: Path, schema: TableSchema) -> Path:
    """`write_table`, also for an empty frame (Arrow cannot infer empty list columns)."""
    if frame.empty:
        return write_table(schema.to_arrow().empty_table(), path, schema)
    return write_table(frame, path, schema)


def to_table(nuclei: pd.DataFrame) -> pd.DataFrame:
    """The consensus table's columns, in schema order."""
    return nuclei[CONSENSUS.column_names].reset_index(drop=True)


def consensus_shard(
    config: HistocurateConfig,
    masks: pd.DataFrame,
    *,
    tiles: pd.DataFrame | None = None,
    segment: SegmentFn | None = None,
    segmenter_name: str | None = None,
    read_tile: Callable[[Any], np.ndarray] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Match and re-segment the tiles in ``masks``.

    Returns (consensus rows with majority labels, per-annotation fates, single-annotator
    tiles, tiles without pixels).
    """
    cfg = config.consensus
    result = build_consensus(
        masks, iou_threshold=cfg.iou_threshold, min_annotators=cfg.min_annotators
    )
    nuclei, missing = resegment(
        result.nuclei,
        tiles,
        segment if cfg.resegment else None,
        segmenter_name=segmenter_name,
        member_segmenter=_member_segmenters(masks),
        read_tile=read_tile,
    )
    return to_table(nuclei), result.assignments, result.single_annotator_tiles, missing


def finish_consensus(
    config: HistocurateConfig,
    nuclei: pd.DataFrame,
    assignments: pd.DataFrame,
    *,
    single_annotator_tiles: Iterable[str] = (),
    tiles_without_pixels: Iterable[str] = (),
    tiles: pd.DataFrame | None = None,
    expected: pd.DataFrame | None = None,
    read_tile: Callable[[Any], np.ndarray] | None = None,
) -> ConsensusRun:
    """Labels over the whole campaign, then the table, exports and the agreement report."""
    cfg = config.consensus
    workspace = Workspace.of(config)
    labelled, fit = apply_labels(nuclei, label_rule=cfg.label_rule)
    table = to_table(labelled)
    write_table(table, workspace.consensus, CONSENSUS)
    write_table(
        assignments[CONSENSUS_FATES.column_names], workspace.consensus_fates, CONSENSUS_FATES
    )
    report = agreement_report(
        assignments,
        table,
        expected=expected,
        single_annotator_tiles=list(single_annotator_tiles),
    )
    if fit is not None:
        report.summary["Dawid-Skene iterations"] = fit.iterations
        agree = table["label_majority"].fillna("-") == table["label_dawid_skene"].fillna("-")
        report.summary["majority = Dawid-Skene"] = float(agree.mean())
    folder = workspace.reports / "consensus"
    atomic_write_text(folder / "agreement.md", report.to_markdown())
    for name in ("per_annotator", "pairwise", "fleiss", "dropped"):
        atomic_write_text(folder / f"{name}.csv", getattr(report, name).to_csv(index=False))
    atomic_write_text(folder / "confusion.csv", report.confusion.to_csv())
    run = ConsensusRun(
        table,
        report,
        workspace.consensus,
        tiles_without_pixels=sorted(set(tiles_without_pixels)),
        resegmented=int((table["polygon_source"] == "resegmented").sum()),
    )
    if cfg.geojson:
        run.geojson = write_geojson(table, workspace.qupath)
    if cfg.overlays:
        run.overlays = write_overlays(
            table, assignments, tiles, folder / "overlays", limit=cfg.overlays, read_tile=read_tile
        )
    return run


def review_order(nuclei: pd.DataFrame, assignments: pd.DataFrame) -> list[str]:
    """Tiles most worth a look first: most undetermined nuclei plus dropped clicks."""
    undetermined = nuclei.loc[nuclei["label"].isna()].groupby("tile_id").size()
    dropped = assignments.loc[assignments["status"] != "kept"].groupby("tile_id").size()
    score = undetermined.add(dropped, fill_value=0)
    all_tiles = sorted(set(nuclei["tile_id"]) | set(assignments["tile_id"]))
    score = score.reindex(all_tiles, fill_value=0)
    return sorted(all_tiles, key=lambda t: (-score[t], t))


def write_overlays(
    nuclei: pd.DataFrame,
    assignments: pd.DataFrame,
    tiles: pd.DataFrame | None,
    folder: Path,
    *,
    limit: int,
    read_tile: Callable[[Any], np.ndarray] | None = None,
) -> list[Path]:
    """Overlay PNGs of the ``limit`` tiles most worth reviewing (see `review_order`)."""
    if read_tile is None:
        from histocurate.slides import read_tile as read_tile_fn

        read_tile = read_tile_fn
    paths = []
    by_tile = dict(tuple(nuclei.groupby("tile_id")))
    lost = assignments.loc[assignments["status"] != "kept"]
    for tile_id in review_order(nuclei, assignments)[:limit]:
        image, size = None, None
        if tiles is not None and tile_id in tiles.index:
            size = int(cast(int, tiles.loc[tile_id, "tile_px"]))
            try:
                image = read_tile(tiles.loc[tile_id])
            except (UserInputError, OSError):
                image = None
        part = by_tile.get(tile_id, nuclei.iloc[0:0])
        picture = draw_overlay(image, part, size=size, dropped=lost.loc[lost["tile_id"] == tile_id])
        paths.append(save_png(picture, folder / f"{tile_id}.png"))
    return paths


def run_consensus(
    config: HistocurateConfig,
    *,
    masks: pd.DataFrame | None = None,
    read_tile: Callable[[Any], np.ndarray] | None = None,
) -> ConsensusRun:
    """The whole stage in this process (masks read from the workspace unless given)."""
    workspace = Workspace.of(config)
    masks = read_masks(workspace) if masks is None else masks
    tiles = read_tiles(workspace)
    segment, name = make_segment_fn(config) if config.consensus.resegment else (None, None)
    nuclei, assignments, single, missing = consensus_shard(
        config, masks, tiles=tiles, segment=segment, segmenter_name=name, read_tile=read_tile
    )
    return finish_consensus(
        config,
        nuclei,
        assignments,
        single_annotator_tiles=single,
        tiles_without_pixels=missing,
        tiles=tiles,
        expected=read_expected(workspace),
        read_tile=read_tile,
    )
