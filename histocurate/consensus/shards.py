"""Consensus in shards of tiles (what the Prefect flow fans out), then one merge.

Tiles are independent for matching and re-segmentation, so a shard is a list of tiles; its
nuclei and click fates go to ``consensus_shards/{nuclei,fates}/<key>.parquet``. The merge
fits the labels over the whole campaign (Dawid-Skene needs every annotator's whole work)
and writes what `run_consensus` writes. Same result as one `run_consensus`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from data_schema import CONSENSUS, CONSENSUS_FATES
from histocurate.config import HistocurateConfig
from histocurate.consensus.stage import (
    ConsensusRun,
    consensus_shard,
    finish_consensus,
    make_segment_fn,
    read_expected,
    read_masks,
    read_tiles,
    write_frame,
)
from histocurate.io import read_table
from histocurate.workspace import Workspace


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """One shard's files and counts (plain values: it crosses task boundaries)."""

    key: str
    tiles: int
    annotations: int
    nuclei: int
    nuclei_path: str
    fates_path: str
    tiles_without_pixels: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_shards(config: HistocurateConfig, masks: pd.DataFrame | None = None) -> list[list[str]]:
    """Tiles of the campaign in shards of ``consensus.shard_tiles`` (sorted, stable)."""
    if masks is None:
        masks = read_masks(Workspace.of(config))
    tiles = sorted(pd.unique(masks["tile_id"].astype(str)))
    size = config.consensus.shard_tiles
    return [tiles[i : i + size] for i in range(0, len(tiles), size)]


def clear_shards(config: HistocurateConfig) -> None:
    """Remove the shard files of an earlier run (they would otherwise be merged again)."""
    shutil.rmtree(Workspace.of(config).consensus_shards, ignore_errors=True)


def run_shard(
    config: HistocurateConfig, tile_ids: list[str], key: str, *, masks: pd.DataFrame | None = None
) -> ShardOutcome:
    """Match and re-segment the tiles ``tile_ids``; write the shard's two files."""
    workspace = Workspace.of(config)
    masks = read_masks(workspace) if masks is None else masks
    part = masks.loc[masks["tile_id"].astype(str).isin(set(tile_ids))]
    segment, name = make_segment_fn(config) if config.consensus.resegment else (None, None)
    nuclei, fates, _, missing = consensus_shard(
        config, part, tiles=read_tiles(workspace), segment=segment, segmenter_name=name
    )
    root = workspace.consensus_shards
    nuclei_path = write_frame(nuclei, root / "nuclei" / f"{key}.parquet", CONSENSUS)
    fates_path = write_frame(
        fates[CONSENSUS_FATES.column_names], root / "fates" / f"{key}.parquet", CONSENSUS_FATES
    )
    return ShardOutcome(
        key, len(tile_ids), len(part), len(nuclei), str(nuclei_path), str(fates_path), missing
    )


def _read_all(paths: list[str], schema: Any) -> pd.DataFrame:
    frames = [read_table(p, schema) for p in paths]
    if not frames:
        return schema.to_arrow().empty_table().to_pandas()
    return pd.concat(frames, ignore_index=True)


def merge_shards(config: HistocurateConfig, outcomes: list[ShardOutcome]) -> ConsensusRun:
    """Labels over all shards, then the consensus table, fates, exports and report."""
    workspace = Workspace.of(config)
    nuclei = _read_all([o.nuclei_path for o in outcomes], CONSENSUS)
    fates = _read_all([o.fates_path for o in outcomes], CONSENSUS_FATES)
    for col in ("labels", "annotators", "members", "member_labels"):
        nuclei[col] = [list(v) for v in nuclei[col]]
    nuclei["label"] = nuclei["label"].astype(object).where(nuclei["label"].notna(), None)
    per_tile = fates.groupby("tile_id")["annotator"].nunique()
    single = sorted(per_tile.index[per_tile.to_numpy() < 2].astype(str))
    missing = sorted({t for o in outcomes for t in o.tiles_without_pixels})
    return finish_consensus(
        config,
        nuclei,
        fates,
        single_annotator_tiles=single,
        tiles_without_pixels=missing,
        tiles=read_tiles(workspace),
        expected=read_expected(workspace),
    )


def shard_keys(n: int) -> list[str]:
    """Shard file names: shard-0000, shard-0001, ..."""
    return [f"shard-{i:04d}" for i in range(n)]


def outcome_from_dict(data: dict[str, Any]) -> ShardOutcome:
    """A `ShardOutcome` back from `ShardOutcome.to_dict` (task results are plain dicts)."""
    return ShardOutcome(**data)
