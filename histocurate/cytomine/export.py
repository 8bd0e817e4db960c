"""Export a campaign: the project (and, per reader, one project each), its ontology and
members, one frozen PNG per selected tile uploaded once, and k annotators per tile.

Re-running adds only what is missing. Every tile has its own outcome: a tile that fails
(PIMS refused its file, its frozen pixels are gone) is named with the reason and the
others go on; when the server itself stops answering, the remaining tiles are marked
"not attempted" and a re-run resumes.

Isolation. ``shared``: one project holds every tile and every reader; the project's
settings hide each contributor's layer from the others. ``per-reader``: the main project
holds the uploads (the manager's view, no reader in it), and each reader gets a project
``<project> / <reader>`` holding only their tiles: the same uploaded image attached again,
not uploaded twice. Then the server itself enforces "3 of 9".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histocurate.campaign import Campaign
from histocurate.cytomine.assignments import draw_annotators
from histocurate.cytomine.client import (
    Connection,
    CytomineAuthError,
    CytominePermissionError,
    CytomineUnreachable,
)
from histocurate.cytomine.frozen import ImageSource, freeze
from histocurate.cytomine.images import (
    ASSIGNMENT_KEY,
    IMAGE_CLASS,
    TILE_KEY,
    ProjectImages,
    attach,
    own_storage,
    set_property,
)
from histocurate.cytomine.projects import (
    ensure_members,
    ensure_project,
    find_project,
    projects_named,
    resolve_users,
)
from histocurate.cytomine.retry import CytomineCallError
from histocurate.cytomine.upload import UploadRouteMissing, upload_tile
from histocurate.errors import HistocurateError, UserInputError
from histocurate.runs import ItemOutcome

READER_SEPARATOR = " / "


def reader_project(project: str, reader: str) -> str:
    """The name of a reader's own project in a per-reader campaign."""
    return f"{project}{READER_SEPARATOR}{reader}"


@dataclass(frozen=True)
class ExportOptions:
    """What to export where (plain values: they travel to a Prefect task)."""

    project: str
    annotators: tuple[str, ...]
    k: int | None = None
    seed: int = 0
    isolation: str = "shared"
    storage: int | None = None


@dataclass
class ExportPlan:
    """The tiles to export and what the workspace knows of them already."""

    options: ExportOptions
    tiles: pd.DataFrame  # tiles rows of the selection, with indication
    tokens: dict[str, str]  # slide -> tiles token now
    previous: pd.DataFrame  # assignments rows of the project
    workspace_root: Path

    @property
    def campaign(self) -> Campaign:
        return Campaign(self.workspace_root, self.options.project)


@dataclass
class ProjectExport:
    """What one project's export did: per-tile outcomes and assignment rows."""

    project_id: int
    created: bool
    members_added: list[str]
    reader_projects: dict[str, int]
    outcomes: list[ItemOutcome] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0


def check_annotators(annotators: Sequence[str], k: int | None) -> None:
    if not annotators:
        raise UserInputError("no annotators: pass --annotators or set [cytomine] annotators")
    twice = sorted({a for a in annotators if list(annotators).count(a) > 1})
    if twice:
        raise UserInputError(f"annotator(s) listed twice: {twice}")
    if k is not None and not 1 <= k <= len(annotators):
        raise UserInputError(f"--k {k} but there are {len(annotators)} annotator(s)")


# Failures after which trying the next tile is pointless: the server, not the tile.
_STOPPING = (CytomineAuthError, CytominePermissionError, CytomineUnreachable, UploadRouteMissing)


class _Exporter:
    def __init__(self, conn: Connection, plan: ExportPlan, source: ImageSource) -> None:
        self.conn, self.plan, self.source = conn, plan, source
        self.options = plan.options
        self.previous = {str(t): g for t, g in plan.previous.groupby("tile_id", sort=False)}

    def setup(self) -> ProjectExport:
        options, conn = self.options, self.conn
        users = resolve_users(  # every unknown name at once
            conn, options.annotators, projects=self._existing_projects
        )
        self.main, created = ensure_project(conn, options.project)
        added: list[int] = []
        self.readers: dict[str, int] = {}
        if options.isolation == "per-reader":
            for reader, uid in users.items():
                info, _ = ensure_project(
                    conn, reader_project(options.project, reader), ontology_of=options.project
                )
                self.readers[reader] = info.id
                added += ensure_members(conn, info.id, [uid])
        else:
            added = ensure_members(conn, self.main.id, list(users.values()))
        self.storage = own_storage(conn, options.storage)
        self.images = ProjectImages.read(conn, self.main.id)
        self.reader_images = {r: ProjectImages.read(conn, pid) for r, pid in self.readers.items()}
        members = sorted({n for n, uid in users.items() if uid in added})
        return ProjectExport(self.main.id, created, members, dict(self.readers))

    def _existing_projects(self) -> list[int]:
        """The campaign's projects already on the server (main, then per-reader ones)."""
        name = self.options.project
        main = find_project(self.conn, name)
        readers = projects_named(self.conn, name + READER_SEPARATOR)
        return [int(p["id"]) for p in ([main] if main else []) + readers]

    def tile(self, tile: pd.Series) -> tuple[ItemOutcome, list[dict[str, Any]]]:
        start = time.perf_counter()
        tile_id, slide = str(tile["tile_id"]), str(tile["slide_id"])
        prev = self.previous.get(tile_id)
        chosen = (
            list(prev["annotator"])
            if prev is not None and len(prev)
            else draw_annotators(
                tile_id, self.options.annotators, self.options.k, self.options.seed
            )
        )
        gone = [r for r in chosen if r not in self.options.annotators]
        if gone:
            raise UserInputError(
                f"tile {tile_id} was assigned to {', '.join(gone)} by an earlier export of "
                f"{self.options.project!r}, who {'is' if len(gone) == 1 else 'are'} not among "
                "the annotators now: add them back to --annotators (an assignment is kept)"
            )
        record = None
        if prev is not None and len(prev):
            first = prev.iloc[0]
            record = {k: str(first[k]) for k in ("image_sha256", "tiles_token")}
        image = self.images.of_tile(tile_id)
        frozen = freeze(
            self.plan.campaign,
            tile,
            record=record,
            token=self.plan.tokens[slide],
            on_server=image is not None,
            source=self.source,
        )
        action = "present"
        if image is None:
            image, action = upload_tile(
                self.conn,
                self.images,
                frozen.path,
                storage_id=self.storage,
                properties={TILE_KEY: tile_id},
            )
        changed = self._label(self.images, image, tile_id, ",".join(chosen))
        homes = {r: (self.main.id, image) for r in chosen}
        for reader in chosen if self.readers else ():
            images = self.reader_images[reader]
            mine = images.of_tile(tile_id) or attach(self.conn, images, int(image["baseImage"]))
            changed |= self._label(images, mine, tile_id, reader)
            homes[reader] = (self.readers[reader], mine)
        rows = [
            {
                "project": self.options.project,
                "project_id": pid,
                "tile_id": tile_id,
                "slide_id": slide,
                "indication": str(tile["indication"]),
                "image_id": int(img["id"]),
                "annotator": reader,
                "k": len(chosen),
                "tile_mpp": float(tile["tile_mpp"]),
                "tile_px": int(tile["tile_px"]),
                "image_sha256": frozen.sha256,
                "tiles_token": frozen.tiles_token,
            }
            for reader, (pid, img) in homes.items()
        ]
        done = changed or action != "present" or frozen.action != "kept"
        outcome = ItemOutcome(
            tile_id,
            "done" if done else "skipped",
            count=len(chosen),
            seconds=time.perf_counter() - start,
            extra={
                "image": action,
                "frozen": frozen.action,
                "image_id": int(image["id"]),
                "annotators": ",".join(chosen),
            },
        )
        return outcome, rows

    def _label(self, images: ProjectImages, image: dict[str, Any], tile_id: str, who: str) -> bool:
        props = images.props.setdefault(int(image["id"]), {})
        changed = set_property(self.conn, IMAGE_CLASS, int(image["id"]), TILE_KEY, tile_id, props)
        return (
            set_property(self.conn, IMAGE_CLASS, int(image["id"]), ASSIGNMENT_KEY, who, props)
            or changed
        )


def export_project(conn: Connection, plan: ExportPlan, source: ImageSource) -> ProjectExport:
    """Bring the project(s) up to date with the plan's tiles; one outcome per tile."""
    exporter = _Exporter(conn, plan, source)
    result = exporter.setup()
    stopped: str | None = None
    for _, tile in plan.tiles.iterrows():
        tile_id = str(tile["tile_id"])
        if stopped is not None:
            result.outcomes.append(ItemOutcome(tile_id, "failed", error=stopped))
            continue
        try:
            outcome, rows = exporter.tile(tile)
        except Exception as exc:  # a tile's failure is its outcome; the others go on
            stop = isinstance(exc, _STOPPING) or (
                isinstance(exc, CytomineCallError) and exc.transient
            )
            # Our own errors say what happened; only a bug names its exception type.
            error = (
                str(exc) if isinstance(exc, HistocurateError) else f"{type(exc).__name__}: {exc}"
            )
            result.outcomes.append(
                ItemOutcome(
                    tile_id, "failed", error=error, input_error=isinstance(exc, UserInputError)
                )
            )
            if stop:
                stopped = f"not attempted: the export stopped at tile {tile_id} ({error})"
            continue
        result.outcomes.append(outcome)
        result.rows += rows
    result.retries = conn.retries
    return result
