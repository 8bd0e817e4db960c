"""The tile stage on a workspace: every slide of the manifest cut into tiles on tissue.

`run_tile(config, *, mapper=map, progress=None, force=False) -> TileRun` (the stage
contract, `histocurate.runs`): the manifest is validated and stored as the ``slides``
table, each slide is one item of work (`tile_item`), and partitions of slides no longer in
the manifest are removed.

Resumable: a slide is done when its partition was made from the same slide file
(fingerprint), manifest row and tiling settings, all recorded in the partition's
provenance; a slide re-scanned under the same id, a changed manifest row or new settings
retile that slide. A slide moved or mounted elsewhere (same content) is followed, not
retiled. A bad slide fails alone (its earlier partition, if any, is left as it was).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from data_schema import SLIDES, TILES
from histocurate.config import HistocurateConfig, TilingConfig
from histocurate.digest import short_digest
from histocurate.io import (
    list_partitions,
    partition_path,
    read_provenance,
    read_table,
    write_partition,
    write_table,
)
from histocurate.manifest import read_manifest
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
from histocurate.slides.fingerprint import file_fingerprint
from histocurate.tiling.slide import render_tiling_overlay, tile_slide
from histocurate.workspace import Workspace


def prepare_slides(config: HistocurateConfig) -> list[dict[str, Any]]:
    """Validate the manifest and store it as the ``slides`` table; return its rows."""
    slides = read_manifest(
        config.resolve(config.cohort.manifest),
        indications=config.cohort.indications,
        default_cohort=config.cohort.name,
    )
    write_table(slides, Workspace.of(config).slides, SLIDES)
    return [{str(k): v for k, v in row.items()} for row in slides.to_dict(orient="records")]


def tiling_provenance(slide_row: Mapping[str, Any], config: TilingConfig) -> dict[str, str]:
    """What a slide's tiles are made from: the slide file's content, its manifest row, the
    settings. Not where the file is: slides moved to another mount (a worker that sees the
    storage elsewhere, a workspace copied) are the same slides, and their tiles (and the
    features made from them) stay valid; only the tiles' ``slide_path`` is updated.

    Raises OSError when the slide file cannot be read.
    """
    row = {
        k: "" if pd.isna(value := slide_row.get(k)) else str(value)  # None and NaN alike
        for k in ("indication", "cohort", "mpp_override")
    }
    return {
        "slide": file_fingerprint(slide_row["path"]),
        "manifest_row": short_digest(repr(sorted(row.items()))),
        "tiling": short_digest(config.model_dump_json()),
    }


def _follow_moved_slide(
    workspace: Workspace, slide_id: str, path: str, provenance: dict[str, str]
) -> None:
    """Point a slide's tiles at its file's current path (same content, moved or mounted
    elsewhere): the tiles and their provenance are kept, so features stay valid."""
    where = partition_path(workspace.tiles, slide_id)
    paths = read_table(where, TILES, columns=["slide_path"])["slide_path"]
    if len(paths) and (paths != path).any():
        tiles = read_table(where, TILES).assign(slide_path=path)
        write_partition(tiles, workspace.tiles, slide_id, TILES, provenance=provenance)


def _provenance_or_none(
    slide_row: Mapping[str, Any], config: TilingConfig
) -> dict[str, str] | None:
    try:
        return tiling_provenance(slide_row, config)
    except OSError:
        return None  # tile_slide names the problem if the slide is tiled


def up_to_date(slide_row: Mapping[str, Any], config: HistocurateConfig) -> bool:
    """Whether a slide's tiles are those it would get now (same file content, manifest row
    and settings; a slide moved elsewhere is followed), or its file is gone and its tiles
    are kept."""
    workspace = Workspace.of(config)
    slide_id = str(slide_row["slide_id"])
    if not partition_path(workspace.tiles, slide_id).exists():
        return False
    provenance = _provenance_or_none(slide_row, config.tiling)
    if provenance is None:
        return True
    if read_provenance(partition_path(workspace.tiles, slide_id)) != provenance:
        return False
    _follow_moved_slide(workspace, slide_id, str(slide_row["path"]), provenance)
    return True


def tile_item(
    slide_row: Mapping[str, Any], *, config: HistocurateConfig, force: bool = False
) -> ItemOutcome:
    """Tile one slide into its partition of ``tiles.parquet`` unless it is up to date.

    Raises for a bad slide (`histocurate.errors.SlideError`: the slide is at fault); a
    slide whose file is gone or unreadable keeps its existing partition (skipped).
    """
    workspace = Workspace.of(config)
    slide_id = str(slide_row["slide_id"])
    provenance = _provenance_or_none(slide_row, config.tiling)
    if not force and up_to_date(slide_row, config):
        return ItemOutcome(slide_id, "skipped")

    def work() -> int:
        tiles, thumbnail = tile_slide(slide_row, config.tiling)
        write_partition(tiles, workspace.tiles, slide_id, TILES, provenance=provenance)
        overlay = overlay_path(workspace, slide_id)
        render_tiling_overlay(Path(slide_row["path"]), thumbnail, tiles, overlay)
        return len(tiles)

    n_tiles, seconds = timed(work)
    return ItemOutcome(slide_id, "done", count=n_tiles, seconds=seconds)


def overlay_path(workspace: Workspace, slide_id: str) -> Path:
    """The review picture of a slide's tiles (``reports/tile/<slide>.png``)."""
    return workspace.reports / "tile" / f"{slide_id}.png"


def slide_id_of(slide_row: Mapping[str, Any]) -> str:
    return str(slide_row["slide_id"])


@dataclass
class TileRun(StageRun):
    """What a tiling run did: one outcome per slide of the manifest."""

    stage: ClassVar[str] = "tile"
    workspace: Path = Path(".")
    removed: list[str] | None = None  # slides no longer in the manifest

    def report(self) -> Report:
        ws = Workspace(self.workspace)
        summary = [
            f"{int(self.total())} tiles written from {len(self.done)} slide(s); "
            f"{len(self.skipped)} up to date; {len(self.failed)} failed ({self.seconds:.1f} s)"
        ]
        if self.removed:
            summary.append(
                f"removed the tiles of {len(self.removed)} slide(s) no longer in the "
                f"manifest: {', '.join(self.removed[:5])}"
            )
        return Report(
            title="Tiling",
            summary=summary,
            table=self.outcome_table("tiles").rename(columns={"item": "slide"}),
            warnings=self.failure_lines(),
            images=[overlay_path(ws, o.item) for o in self.done if o.count],
            outputs={"tiles": ws.tiles, "overlays": ws.reports / "tile"},
        )


def run_tile(
    config: HistocurateConfig,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
    force: bool = False,
) -> TileRun:
    """Tile every slide of the manifest (the stage contract; see the module docstring)."""

    def run() -> tuple[list[ItemOutcome], list[str]]:
        slides = prepare_slides(config)
        workspace = Workspace.of(config)
        listed = {str(row["slide_id"]) for row in slides}
        removed = [s for s in list_partitions(workspace.tiles) if s not in listed]
        for slide_id in removed:
            partition_path(workspace.tiles, slide_id).unlink(missing_ok=True)
            overlay_path(workspace, slide_id).unlink(missing_ok=True)
        # slides up to date are settled here: they never become tasks
        done = [] if force else [row for row in slides if up_to_date(row, config)]
        pending = [row for row in slides if all(row is not d for d in done)]
        work = ItemWork(partial(tile_item, config=config, force=True), slide_id_of, "tile")
        outcomes = run_items(work, pending, mapper=mapper, progress=progress,
                             description="tiling")  # fmt: skip
        return skipped(slide_id_of(row) for row in done) + outcomes, removed

    (outcomes, removed), seconds = timed(run)
    return TileRun(outcomes, seconds, workspace=config.workspace, removed=removed)
