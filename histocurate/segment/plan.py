"""What a segment run has to do for one campaign: which tiles, which clicks, what is stale.

A tile's masks are up to date when its file's provenance records the same pixels (the
sha256 of the image exported to Cytomine), the same clicks (digest of id, annotator,
position, label) and the same segmenter. Only the campaign's clicks (a pyarrow filter on
``points.parquet``) and its exported tiles (the assignments) are read: the size of the
cohort's tiles table does not matter. Clicks are grouped by tile once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histocurate.campaign import AnnotatedTiles, Campaign, check_unchanged_slides, read_points
from histocurate.config import HistocurateConfig
from histocurate.digest import json_digest
from histocurate.io import list_partitions, partition_path, read_provenance
from histocurate.slides.fingerprint import file_fingerprint
from histocurate.workspace import Workspace

CLICK_COLUMNS = ["annotation_id", "annotator", "x", "y", "label"]


def segmenter_identity(config: HistocurateConfig, name: str) -> str:
    """What makes a segmenter's masks: its name, weights (file fingerprint) and threshold."""
    section = config.segment
    parts: dict[str, Any] = {"name": name}
    if name == "nuclick" and section.checkpoint is not None:
        path = config.resolve(section.checkpoint)
        parts["weights"] = file_fingerprint(path) if path.exists() else str(path)
        parts["threshold"] = section.threshold
    return json_digest(parts)


def clicks_digest(points: pd.DataFrame) -> str:
    """Digest of one tile's clicks, independent of row order."""
    rows = points[CLICK_COLUMNS].sort_values("annotation_id")
    return json_digest([[*map(str, r)] for r in rows.itertuples(index=False)])


def inside(points: pd.DataFrame, side: int) -> pd.Series:
    """Clicks within their tile (``side`` pixels)."""
    return points["x"].between(0, side, inclusive="left") & points["y"].between(
        0, side, inclusive="left"
    )


def masks_provenance(
    annotated: AnnotatedTiles, tile_id: str, points: pd.DataFrame, segmenter: str
) -> dict[str, str]:
    """What a tile's masks file is made from."""
    side = annotated.side(tile_id)
    return {
        "pixels": annotated.sha256(tile_id),
        "clicks": clicks_digest(points[inside(points, side)]),
        "segmenter": segmenter,
    }


@dataclass(frozen=True)
class TileBatch:
    """One item of work: some tiles of the campaign with their clicks."""

    tile_ids: tuple[str, ...]
    points: pd.DataFrame  # the clicks of these tiles
    overlays: frozenset[str] = frozenset()  # tiles of this batch to draw

    @property
    def name(self) -> str:
        more = f"+{len(self.tile_ids) - 1}" if len(self.tile_ids) > 1 else ""
        return f"{self.tile_ids[0]}{more}"


def batch_name(batch: TileBatch) -> str:
    return batch.name


@dataclass
class SegmentPlan:
    """Tiles to segment (in batches), tiles up to date, stale files, tiles not exported."""

    campaign: Campaign
    annotated: AnnotatedTiles
    segmenter_id: str
    batches: list[TileBatch]
    skipped: list[str]
    stale: list[str]
    not_exported: list[str]
    rescanned: list[str] = field(default_factory=list)
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def pending(self) -> list[str]:
        return [t for b in self.batches for t in b.tile_ids]


def plan_segment(
    config: HistocurateConfig,
    project: str,
    segmenter: str,
    *,
    force: bool = False,
    tile_ids: Sequence[str] | None = None,
) -> SegmentPlan:
    """List the work of a segment run on ``project`` (see the module docstring)."""
    ws = Workspace.of(config)
    campaign = ws.campaign(project)
    annotated = AnnotatedTiles.read(ws.assignments, campaign)
    points = read_points(ws.points, project)
    if tile_ids is not None:
        points = points[points["tile_id"].isin(set(tile_ids))]
    seg_id = segmenter_identity(config, segmenter)
    by_tile = {str(t): g for t, g in points.groupby("tile_id", sort=True)}
    not_exported = [t for t in by_tile if t not in annotated]
    done = set(list_partitions(campaign.masks))
    pending: list[str] = []
    skipped: list[str] = []
    provenance: dict[str, dict[str, str]] = {}
    for tile_id, group in by_tile.items():
        if tile_id not in annotated:
            continue
        wanted = masks_provenance(annotated, tile_id, group, seg_id)
        path = partition_path(campaign.masks, tile_id)
        if not force and tile_id in done and read_provenance(path) == wanted:
            skipped.append(tile_id)
            continue
        pending.append(tile_id)
        provenance[tile_id] = wanted
    stale = sorted(done - set(by_tile)) if tile_ids is None else []
    size = config.segment.tiles_per_batch
    drawn = frozenset(pending[: config.segment.overlays])
    batches = [
        TileBatch(
            tuple(ids),
            pd.concat([by_tile[t] for t in ids], ignore_index=True),
            drawn & frozenset(ids),
        )
        for ids in (pending[i : i + size] for i in range(0, len(pending), size))
    ]
    rescanned = check_unchanged_slides(ws.tiles, annotated, [t for t in by_tile if t in annotated])
    return SegmentPlan(
        campaign, annotated, seg_id, batches, skipped, stale, not_exported, rescanned, provenance
    )


def legacy_tables(root: Path) -> list[Path]:
    """Annotation tables an earlier histocurate wrote at the workspace root (before
    campaigns had folders): they are not read any more."""
    names = ("masks.parquet", "consensus.parquet", "consensus_fates.parquet")
    return [root / n for n in names if (root / n).exists()]
