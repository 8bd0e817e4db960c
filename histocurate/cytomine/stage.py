"""The Cytomine stages as the CLI and the Prefect flows run them (the stage contract of
`histocurate.runs`): ``run_export``, ``run_import``, ``run_push_consensus``.

The library client is a process-wide singleton, so the network work of a stage is one
item (one task under Prefect) per project; the per-tile outcomes it produces travel back
in that item's ``extra`` and become the run's outcomes. Keys never travel: the work reads
them from the environment or Secret blocks where it runs.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from data_schema.assignments import ASSIGNMENTS
from histocurate.config import HistocurateConfig
from histocurate.cytomine.assignments import load_assignments, write_assignments
from histocurate.cytomine.client import RetryPolicy, connect
from histocurate.cytomine.convert import ImportOptions
from histocurate.cytomine.credentials import (
    ENV_HOST,
    Credentials,
    resolve_credentials,
)
from histocurate.cytomine.export import (
    ExportOptions,
    ExportPlan,
    check_annotators,
    export_project,
)
from histocurate.cytomine.frozen import ImageSource, default_source
from histocurate.cytomine.importer import COUNT_COLUMNS, import_annotations
from histocurate.cytomine.runs import ExportRun, ImportRun, outcome_dicts
from histocurate.cytomine.selected import read_selected_tiles, read_selection, tiles_tokens
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, run_items
from histocurate.workspace import Workspace


def policy_of(config: HistocurateConfig) -> RetryPolicy:
    section = config.cytomine
    return RetryPolicy(
        attempts=section.retries,
        backoff_s=section.backoff_s,
        timeout_s=section.timeout_s,
        connect_deadline_s=section.connect_deadline_s,
        upload_wait_s=section.upload_wait_s,
    )


def credentials_of(config: HistocurateConfig, host: str | None = None) -> Credentials:
    """Host: ``host`` > ``CYTOMINE_HOST`` > ``[cytomine] host``; keys: environment or blocks."""
    section = config.cytomine
    return resolve_credentials(
        host=host or os.environ.get(ENV_HOST) or section.host,
        public_key_block=section.public_key_block,
        private_key_block=section.private_key_block,
    )


def project_of(config: HistocurateConfig, project: str | None) -> str:
    name = project or config.cytomine.project
    if not name:
        raise UserInputError("no project name: pass --project or set [cytomine] project")
    return name


def unpack(outcome: ItemOutcome, key: str = "tiles") -> list[ItemOutcome]:
    """The per-tile outcomes a project item carried back (or its own failure)."""
    if key not in outcome.extra:
        return [outcome]
    return [ItemOutcome(**d) for d in outcome.extra[key]]


# -- export ---------------------------------------------------------------------------------


def _export_item(
    config: HistocurateConfig, host: str | None, plan: ExportPlan, source: ImageSource, _: str
) -> ItemOutcome:
    """The network work of an export (one project): runs where the task runs."""
    with connect(
        credentials_of(config, host), policy_of(config), upload_url=config.cytomine.upload_url
    ) as conn:
        done = export_project(conn, plan, source)
        base_url = conn.base_url
    failed = sum(o.status == "failed" for o in done.outcomes)
    return ItemOutcome(
        plan.options.project,
        "failed" if failed else "done",
        count=len(done.rows),
        extra={
            "tiles": outcome_dicts(done.outcomes),
            "rows": done.rows,
            "project_id": done.project_id,
            "created": done.created,
            "members_added": done.members_added,
            "reader_projects": done.reader_projects,
            "retries": done.retries,
            "base_url": base_url,
        },
    )


def run_export(
    config: HistocurateConfig,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
    selection: Path | None = None,
    indication: str | None = None,
    project: str | None = None,
    annotators: list[str] | None = None,
    k: int | None = None,
    isolation: str | None = None,
    host: str | None = None,
    image_source: ImageSource | None = None,
) -> ExportRun:
    """`histocurate export`: one indication's selected tiles to a Cytomine campaign."""
    start = time.perf_counter()
    workspace = Workspace.of(config)
    section = config.cytomine
    name = project_of(config, project)
    people = tuple(annotators or section.annotators)
    k = k if k is not None else section.k_per_tile
    check_annotators(people, k)
    how = isolation or section.isolation
    if how not in ("shared", "per-reader"):
        raise UserInputError(f"--isolation {how!r}: use 'shared' or 'per-reader'")
    selected = read_selection(selection or workspace.selection, indication)
    tiles = read_selected_tiles(workspace.tiles, selected)
    plan = ExportPlan(
        ExportOptions(name, people, k, section.seed, how, section.storage),
        tiles,
        tiles_tokens(workspace.tiles, sorted(set(tiles["slide_id"]))),
        load_assignments(workspace.assignments, name),
        workspace.root,
    )
    work = ItemWork(
        partial(_export_item, config, host, plan, image_source or default_source),
        name_of=str,
        stage="export",
    )
    [item] = run_items(
        work, [name], mapper=mapper, progress=progress, description=f"export to {name}"
    )
    extra = item.extra
    run = ExportRun(
        outcomes=unpack(item),
        project=name,
        indication=str(selected["indication"].iloc[0]) if len(selected) else indication,
        project_id=extra.get("project_id"),
        base_url=str(extra.get("base_url", "")),
        created=bool(extra.get("created")),
        isolation=how,
        members_added=list(extra.get("members_added", [])),
        reader_projects=dict(extra.get("reader_projects", {})),
        retries=int(extra.get("retries", 0)),
    )
    rows = pd.DataFrame(extra.get("rows", []), columns=ASSIGNMENTS.column_names)
    if len(rows):
        _record(workspace.assignments, name, rows)
    run.assignments = len(load_assignments(workspace.assignments, name))
    run.seconds = time.perf_counter() - start
    return run


def _record(path: Path, project: str, rows: pd.DataFrame) -> None:
    """Write the tiles' assignment rows, unless the table already holds exactly these."""
    before = load_assignments(path, project)
    mine = before[before["tile_id"].isin(rows["tile_id"])]
    columns = ASSIGNMENTS.column_names

    def norm(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[columns].sort_values(["tile_id", "annotator"]).reset_index(drop=True)
        return out.astype({c: object for c in columns})

    if len(mine) == len(rows) and norm(mine).equals(norm(rows)):
        return
    write_assignments(path, project, rows, replaced=set(rows["tile_id"]))


# -- import ---------------------------------------------------------------------------------


def import_options(config: HistocurateConfig, **given: Any) -> ImportOptions:
    """The import's options: flags given (not None) over the [cytomine] section."""
    section = config.cytomine
    values = {
        k: getattr(section, k) for k in ("reviewed", "label_by", "polygons", "keep_unassigned")
    }
    values.update({k: v for k, v in given.items() if v is not None})
    allowed = {
        "reviewed": ("exclude", "include", "only"),
        "label_by": ("creator", "reviewer"),
        "polygons": ("reject", "centroid"),
    }
    for key, choices in allowed.items():
        if values[key] not in choices:
            raise UserInputError(
                f"--{key.replace('_', '-')} {values[key]!r}: use one of {', '.join(choices)}"
            )
    return ImportOptions(**values)


def _import_item(
    config: HistocurateConfig, host: str | None, options: ImportOptions, project: str
) -> ItemOutcome:
    """The network work of an import (one campaign): runs where the task runs."""
    workspace = Workspace.of(config)
    with connect(credentials_of(config, host), policy_of(config)) as conn:
        done = import_annotations(
            conn,
            project=project,
            points_path=workspace.points,
            rejects_path=workspace.import_rejects,
            assignments=load_assignments(workspace.assignments, project),
            options=options,
        )
    failed = any(o.status == "failed" for o in done.outcomes)
    return ItemOutcome(
        project,
        "failed" if failed else "done",
        count=len(done.points),
        extra={
            "tiles": outcome_dicts(done.outcomes),
            "project_ids": done.project_ids,
            "images": done.images,
            "annotations": done.annotations,
            "rejected": done.reject_reasons,
            "deleted": done.deleted,
            "counts": done.counts.to_dict(orient="records"),
            "written": done.written,
            "retries": done.retries,
            "notes": done.notes,
        },
    )


def run_import(
    config: HistocurateConfig,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
    project: str | None = None,
    host: str | None = None,
    reviewed: str | None = None,
    label_by: str | None = None,
    polygons: str | None = None,
    keep_unassigned: bool | None = None,
) -> ImportRun:
    """`histocurate import`: the campaign's annotations into ``points.parquet``."""
    start = time.perf_counter()
    name = project_of(config, project)
    options = import_options(
        config,
        reviewed=reviewed,
        label_by=label_by,
        polygons=polygons,
        keep_unassigned=keep_unassigned,
    )
    work = ItemWork(partial(_import_item, config, host, options), name_of=str, stage="import")
    [item] = run_items(
        work, [name], mapper=mapper, progress=progress, description=f"import of {name}"
    )
    extra = item.extra
    counts = pd.DataFrame(extra.get("counts", []), columns=COUNT_COLUMNS)
    return ImportRun(
        outcomes=unpack(item),
        project=name,
        project_ids=list(extra.get("project_ids", [])),
        images=int(extra.get("images", 0)),
        annotations=int(extra.get("annotations", 0)),
        points=int(item.count),
        rejected=dict(extra.get("rejected", {})),
        deleted=int(extra.get("deleted", 0)),
        counts=counts,
        written=bool(extra.get("written")),
        retries=int(extra.get("retries", 0)),
        notes=list(extra.get("notes", [])),
        seconds=time.perf_counter() - start,
    )
