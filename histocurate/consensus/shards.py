"""One item of consensus work: a shard of tiles matched and re-segmented.

Tiles are independent for matching and re-segmentation, so a shard is a list of tiles; its
nuclei and click fates go to ``campaigns/<project>/.consensus-shards/<key>/`` (a hidden
folder the merge reads and removes), so that shards computed in other processes or on other
machines reach the merge through the shared workspace. Labels are fitted later, over the
whole campaign (Dawid-Skene learns each annotator from all their work).

Re-segmentation is batched across the tiles of a shard, as the segment stage batches
clicks: one `segment_images` call for all the shard's consensus centroids, on the exported
pixels.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from data_schema import CONSENSUS, CONSENSUS_FATES, MASKS, TableSchema
from histocurate.campaign import AnnotatedTiles, Campaign
from histocurate.config import HistocurateConfig
from histocurate.consensus.core import build_consensus
from histocurate.errors import UserInputError
from histocurate.geometry import to_wkb
from histocurate.io import read_partition, read_table, write_table
from histocurate.runs import ItemOutcome
from histocurate.segment.segmenters import segment_images

if TYPE_CHECKING:
    from histocurate.segment.segmenters import Segmenter

log = logging.getLogger(__name__)
MASK_COLUMNS = [c for c in MASKS.column_names if c not in ("area", "fallback")]


@dataclass(frozen=True)
class Shard:
    """Some tiles of the campaign, consensus-ed together (one task in the flow)."""

    key: str
    tile_ids: tuple[str, ...]


def shard_key(shard: Shard) -> str:
    return shard.key


def make_shards(tile_ids: list[str], size: int) -> list[Shard]:
    """Tiles in shards of ``size`` (sorted: stable keys from run to run)."""
    ordered = sorted(tile_ids)
    return [
        Shard(f"shard-{k:04d}", tuple(ordered[i : i + size]))
        for k, i in enumerate(range(0, len(ordered), size))
    ]


def shards_root(campaign: Campaign) -> Path:
    return campaign.root / ".consensus-shards"


def clear_shards(campaign: Campaign) -> None:
    """Remove shard files of an earlier (interrupted) run: they would be merged again."""
    shutil.rmtree(shards_root(campaign), ignore_errors=True)


def write_frame(frame: pd.DataFrame, path: Path, schema: TableSchema) -> Path:
    """`write_table`, also for an empty frame (Arrow cannot infer empty list columns)."""
    if frame.empty:
        return write_table(schema.to_arrow().empty_table(), path, schema)
    return write_table(frame[schema.column_names], path, schema)


def read_shard_masks(campaign: Campaign, tile_ids: tuple[str, ...]) -> pd.DataFrame:
    """The masks of some tiles (their partitions only)."""
    frames = [read_partition(campaign.masks, t, MASKS, columns=MASK_COLUMNS) for t in tile_ids]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MASK_COLUMNS)


def resegment(
    nuclei: pd.DataFrame,
    annotated: AnnotatedTiles,
    segmenter: Segmenter | None,
    *,
    member_segmenter: pd.Series,
) -> tuple[pd.DataFrame, list[str]]:
    """Add polygon (WKB), polygon_source, segmenter and area to core nuclei.

    The consensus centroids of all the tiles are segmented again in one batched call;
    where that is off, fails or gives nothing, the member mask that best overlaps the others
    is kept. Returns the tiles whose pixels could not be read (their member masks kept).
    """
    geoms = nuclei["geometry"].to_numpy(dtype=object).copy()
    source = np.full(len(nuclei), "member", dtype=object)
    seg_name = np.array(
        [member_segmenter.get(m[0], "watershed") for m in nuclei["members"]], dtype=object
    )
    missing: list[str] = []
    if segmenter is not None and len(nuclei):
        images, points, mpps, rows_of = [], [], [], []
        for tile_key, rows in nuclei.groupby("tile_id", sort=True).indices.items():
            tile_id = str(tile_key)
            try:
                images.append(annotated.pixels(tile_id))
            except UserInputError as exc:
                log.warning("tile %s: %s; member masks kept", tile_id, exc)
                missing.append(tile_id)
                continue
            points.append(nuclei[["x", "y"]].to_numpy()[rows])
            mpps.append(annotated.mpp(tile_id))
            rows_of.append(rows)
        results = segment_images(images, points, segmenter=segmenter, mpp=mpps)
        for rows, result in zip(rows_of, results, strict=True):
            for pos, poly in zip(rows, result.polygons, strict=True):
                if poly is not None and not poly.is_empty and poly.area > 0:
                    geoms[pos] = poly
                    source[pos] = "resegmented"
                    seg_name[pos] = segmenter.name
    out = nuclei.drop(columns="geometry")
    out["polygon"] = to_wkb(geoms)
    out["polygon_source"] = source
    out["segmenter"] = seg_name
    out["area"] = shapely.area(geoms)
    return out, sorted(missing)


def consensus_shard(
    shard: Shard,
    *,
    config: HistocurateConfig,
    annotated: AnnotatedTiles,
    segmenter: Segmenter | None,
) -> ItemOutcome:
    """Match and re-segment the tiles of ``shard``; write the shard's two files."""
    campaign = annotated.campaign
    masks = read_shard_masks(campaign, shard.tile_ids)
    cfg = config.consensus
    result = build_consensus(
        masks, iou_threshold=cfg.iou_threshold, min_annotators=cfg.min_annotators
    )
    member_segmenter = pd.Series(masks["segmenter"].to_numpy(), index=masks["annotation_id"])
    nuclei, missing = resegment(
        result.nuclei,
        annotated,
        segmenter if cfg.resegment else None,
        member_segmenter=member_segmenter,
    )
    nuclei["project"] = campaign.project
    fates = result.assignments.assign(project=campaign.project)
    folder = shards_root(campaign) / shard.key
    write_frame(nuclei, folder / "nuclei.parquet", CONSENSUS)
    write_frame(fates, folder / "fates.parquet", CONSENSUS_FATES)
    return ItemOutcome(
        shard.key,
        "done",
        count=len(nuclei),
        extra={
            "tiles": len(shard.tile_ids),
            "annotations": len(masks),
            "tiles_without_pixels": missing,
        },
    )


def read_shards(campaign: Campaign, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The nuclei and fates of the shards ``keys`` (list columns back as Python lists)."""
    root = shards_root(campaign)
    nuclei = [read_table(root / k / "nuclei.parquet", CONSENSUS) for k in keys]
    fates = [read_table(root / k / "fates.parquet", CONSENSUS_FATES) for k in keys]
    all_nuclei = (
        pd.concat(nuclei, ignore_index=True)
        if nuclei
        else CONSENSUS.to_arrow().empty_table().to_pandas()
    )
    all_fates = (
        pd.concat(fates, ignore_index=True)
        if fates
        else CONSENSUS_FATES.to_arrow().empty_table().to_pandas()
    )
    for col in ("labels", "annotators", "members", "member_labels"):
        all_nuclei[col] = [list(v) for v in all_nuclei[col]]
    all_nuclei["label"] = (
        all_nuclei["label"].astype(object).where(all_nuclei["label"].notna(), None)
    )
    return all_nuclei, all_fates
