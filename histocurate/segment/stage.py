"""The segment stage: a campaign's clicks -> its masks (one file per tile), resumable.

`run_segment(config, *, project=None, mapper=map, progress=None, force=False) -> SegmentRun`
(the stage contract, `histocurate.runs`). Each annotator's clicks of a tile are segmented
together: their other clicks are the exclusion map, and overlaps are resolved among them
(another annotator's click on the same nucleus is another mask of that nucleus, for the
consensus stage to match). The tiles of a batch share NuClick batches; a batch is one item
of work (one task in the flow). Pixels are the ones exported to Cytomine (frozen in the
campaign folder), never the slide. Files of tiles that lost all their clicks are removed;
clicks outside their tile are left out and reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from data_schema import MASKS
from histocurate.campaign import AnnotatedTiles, resolve_project
from histocurate.config import HistocurateConfig
from histocurate.geometry import to_wkb
from histocurate.io import atomic_write_text, partition_path, write_partition
from histocurate.runs import (
    ItemOutcome,
    ItemWork,
    Mapper,
    Progress,
    Report,
    StageRun,
    run_items,
    skipped,
    timed,
)
from histocurate.segment.overlay import draw_masks
from histocurate.segment.plan import (
    SegmentPlan,
    TileBatch,
    batch_name,
    inside,
    legacy_tables,
    plan_segment,
)
from histocurate.segment.segmenters import Segmenter, make_segmenter, segment_images
from histocurate.workspace import Workspace

ReadPixels = Callable[[str], np.ndarray]


def segmenter_for(config: HistocurateConfig, name: str | None = None) -> Segmenter:
    """The configured segmenter (``name`` overrides ``[segment] segmenter``)."""
    section = config.segment
    checkpoint = config.resolve(section.checkpoint) if section.checkpoint else None
    return cached_segmenter(
        name or section.segmenter,
        checkpoint,
        section.device,
        section.batch_size,
        section.threshold,
    )


@lru_cache(maxsize=4)
def cached_segmenter(
    name: str, checkpoint: Path | None, device: str, batch_size: int, threshold: float
) -> Segmenter:
    """One segmenter per process and settings: the tasks of a flow share loaded weights."""
    return make_segmenter(
        name, checkpoint, device=device, batch_size=batch_size, threshold=threshold
    )


def _tile_rows(
    project: str, tile_id: str, entries: list[tuple[str, Any, pd.DataFrame]]
) -> pd.DataFrame:
    """Rows of one tile's masks from its per-annotator results."""
    frames = []
    for annotator, res, group in entries:
        geoms = np.asarray(res.polygons, dtype=object)
        frames.append(
            pd.DataFrame(
                {
                    "project": project,
                    "annotation_id": group["annotation_id"].to_numpy(),
                    "tile_id": tile_id,
                    "annotator": annotator,
                    "x": group["x"].to_numpy(),
                    "y": group["y"].to_numpy(),
                    "label": group["label"].to_numpy(),
                    "polygon": to_wkb(geoms),
                    "segmenter": res.segmenter,
                    "area": [g.area for g in geoms],
                    "fallback": res.fallback,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=MASKS.column_names)
    return pd.concat(frames, ignore_index=True)


def segment_batch(
    batch: TileBatch,
    *,
    config: HistocurateConfig,
    plan: SegmentPlan,
    read_pixels: ReadPixels | None = None,
) -> ItemOutcome:
    """Segment the clicks of one batch of tiles and write their files (one item of work)."""
    segmenter = segmenter_for(config)
    annotated: AnnotatedTiles = plan.annotated
    pixels = read_pixels or annotated.pixels
    project = plan.campaign.project
    images, pts, mpps, owners = [], [], [], []
    outside: list[int] = []
    by_tile = {str(t): g for t, g in batch.points.groupby("tile_id", sort=False)}
    loaded: dict[str, np.ndarray] = {}
    for tile_id in batch.tile_ids:
        image = loaded[tile_id] = np.asarray(pixels(tile_id))
        tile_points = by_tile[tile_id]
        keep = inside(tile_points, image.shape[0]).to_numpy() & (
            tile_points["x"].to_numpy() < image.shape[1]
        )
        outside += [int(a) for a in tile_points["annotation_id"].to_numpy()[~keep]]
        for annotator, group in tile_points[keep].groupby("annotator", sort=True):
            images.append(image)
            pts.append(group[["x", "y"]].to_numpy(np.float64))
            mpps.append(annotated.mpp(tile_id))
            owners.append((tile_id, str(annotator), group))
    results = segment_images(images, pts, segmenter=segmenter, mpp=mpps)
    result_of: dict[str, list[tuple[str, Any, pd.DataFrame]]] = {t: [] for t in batch.tile_ids}
    fallback = merged = 0
    for (tile_id, annotator, group), res in zip(owners, results, strict=True):
        result_of[tile_id].append((annotator, res, group))
        fallback += res.n_fallback
        merged += int(res.merged.sum())
    masks = 0
    overlays: list[str] = []
    for tile_id in batch.tile_ids:
        rows = _tile_rows(project, tile_id, result_of[tile_id])
        write_partition(
            rows, plan.campaign.masks, tile_id, MASKS, provenance=plan.provenance[tile_id]
        )
        masks += len(rows)
        if tile_id in batch.overlays and len(rows):
            out = plan.campaign.reports("segment") / "overlays" / f"{tile_id}.png"
            overlays.append(str(draw_masks(loaded[tile_id], rows, out)))
    return ItemOutcome(
        batch.name,
        "done",
        count=masks,
        extra={
            "tiles": len(batch.tile_ids),
            "fallback": fallback,
            "merged": merged,
            "outside": len(outside),
            "outside_ids": outside[:20],
            "overlays": overlays,
        },
    )


@dataclass
class SegmentRun(StageRun):
    """What one segment run did on a campaign (also written to its reports/segment/)."""

    stage: ClassVar[str] = "segment"
    project: str = ""
    segmenter: str = ""
    tiles_done: list[str] = field(default_factory=list)
    tiles_skipped: list[str] = field(default_factory=list)
    tiles_removed: list[str] = field(default_factory=list)
    tiles_not_exported: list[str] = field(default_factory=list)
    rescanned_slides: list[str] = field(default_factory=list)
    legacy: list[str] = field(default_factory=list)

    @property
    def masks(self) -> int:
        return int(self.total())

    @property
    def overlays(self) -> list[str]:
        return [p for o in self.done for p in o.extra.get("overlays", [])]

    def report(self) -> Report:
        summary = [
            f"{self.masks} masks in {len(self.tiles_done)} tile(s) of {self.project} by "
            f"{self.segmenter} ({len(self.tiles_skipped)} up to date, "
            f"{len(self.tiles_removed)} stale removed) in {self.seconds:.1f} s",
            f"{int(self.total('fallback'))} click(s) fell back to a disc, "
            f"{int(self.total('merged'))} marked a nucleus already clicked, "
            f"{int(self.total('outside'))} lay outside their tile (left out)",
        ]
        if not self.done and not self.tiles_removed:
            summary.append("no new or changed clicks: nothing written")
        warnings = self.failure_lines()
        if self.tiles_not_exported:
            warnings.append(
                f"{len(self.tiles_not_exported)} tile(s) with clicks were not exported to "
                f"{self.project} (left out): {', '.join(self.tiles_not_exported[:5])}"
            )
        warnings += campaign_warnings(self.project, self.rescanned_slides, self.legacy)
        table = self.outcome_table("masks").rename(columns={"item": "tiles"})
        table = table[table["status"] != "skipped"].reset_index(drop=True)  # counted above
        return Report(
            title=f"Segmentation of {self.project} ({self.segmenter})",
            summary=summary,
            table=table,
            warnings=warnings,
            images=[Path(p) for p in self.overlays],
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcomes"] = [o.as_dict() for o in self.outcomes]
        return data


def campaign_warnings(project: str, rescanned: list[str], legacy: list[str]) -> list[str]:
    """What an annotation-side run says about its campaign's surroundings: slides changed
    since export, and tables of an earlier histocurate left at the workspace root."""
    found = [rescan_warning(project, rescanned)] if rescanned else []
    return found + [f"{p}: written by an earlier histocurate, not read" for p in legacy]


def rescan_warning(project: str, slides: list[str]) -> str:
    return (
        f"slide(s) {', '.join(slides[:5])} changed since their tiles were exported to "
        f"{project} (re-scanned or replaced): this campaign keeps using the exported pixels "
        "(its masks and consensus are unaffected), but the slide's new tiles are not what was "
        "annotated; export them to a new project to annotate them"
    )


def run_segment(
    config: HistocurateConfig,
    *,
    project: str | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
    force: bool = False,
    read_pixels: ReadPixels | None = None,
) -> SegmentRun:
    """Segment every tile of the campaign whose masks are missing or out of date."""

    def run() -> SegmentRun:
        ws = Workspace.of(config)
        name = resolve_project(project, configured=config.cytomine.project, points_path=ws.points)
        segmenter = segmenter_for(config)
        plan = plan_segment(config, name, segmenter.name, force=force)
        for tile_id in plan.stale:
            partition_path(plan.campaign.masks, tile_id).unlink(missing_ok=True)
        work = ItemWork(
            partial(segment_batch, config=config, plan=plan, read_pixels=read_pixels),
            batch_name,
            "segment",
        )
        outcomes = run_items(
            work,
            plan.batches,
            mapper=mapper,
            progress=progress,
            description=f"segmenting ({segmenter.name})",
        )
        done = [
            t
            for b, o in zip(plan.batches, outcomes, strict=True)
            if o.status == "done"
            for t in b.tile_ids
        ]
        return SegmentRun(
            skipped(plan.skipped) + outcomes,
            project=name,
            segmenter=segmenter.name,
            tiles_done=done,
            tiles_skipped=plan.skipped,
            tiles_removed=plan.stale,
            tiles_not_exported=plan.not_exported,
            rescanned_slides=plan.rescanned,
            legacy=[str(p) for p in legacy_tables(ws.root)],
        )

    result, seconds = timed(run)
    result.seconds = seconds
    if result.done or result.tiles_removed or result.failed:  # a run that did nothing
        write_summary(Workspace.of(config), result)  # leaves every file as it was
    return result


def write_summary(ws: Workspace, run: SegmentRun) -> Path:
    path = ws.campaign(run.project).reports("segment") / "summary.json"
    atomic_write_text(path, json.dumps(run.as_dict(), indent=1, default=str))
    return path
