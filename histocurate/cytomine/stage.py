"""The export and import stages as the CLI and the Prefect flows run them: configuration,
credentials and workspace paths in, result objects out (no printing here)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from data_schema.tiles import TILES
from histocurate.config import HistocurateConfig
from histocurate.cytomine.client import RetryPolicy, connect
from histocurate.cytomine.credentials import ENV_HOST, Credentials, resolve_credentials
from histocurate.cytomine.export import (
    ExportResult,
    ImageSource,
    export_campaign,
    read_selected_tile_ids,
)
from histocurate.cytomine.importer import ImportResult, import_annotations
from histocurate.errors import UserInputError
from histocurate.io import read_table
from histocurate.workspace import Workspace


def policy_of(config: HistocurateConfig) -> RetryPolicy:
    section = config.cytomine
    return RetryPolicy(
        attempts=section.retries,
        timeout_s=section.timeout_s,
        connect_deadline_s=section.connect_deadline_s,
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


def run_export(
    config: HistocurateConfig,
    *,
    selection: Path | None = None,
    project: str | None = None,
    annotators: Sequence[str] | None = None,
    k: int | None = None,
    host: str | None = None,
    image_source: ImageSource | None = None,
) -> ExportResult:
    """`histocurate export`: the selection's tiles to a Cytomine project."""
    workspace = Workspace.of(config)
    name = project_of(config, project)
    people = list(annotators or config.cytomine.annotators)
    if not people:
        raise UserInputError("no annotators: pass --annotators or set [cytomine] annotators")
    tile_ids = read_selected_tile_ids(selection or workspace.selection)
    tiles = read_table(workspace.tiles, TILES)
    tiles = tiles[tiles["tile_id"].isin(tile_ids)]
    with connect(credentials_of(config, host), policy_of(config)) as conn:
        return export_campaign(
            conn,
            project=name,
            tile_ids=tile_ids,
            tiles=tiles,
            annotators=people,
            k=k if k is not None else config.cytomine.k_per_tile,
            seed=config.cytomine.seed,
            assignments_path=workspace.assignments,
            image_source=image_source,
        )


def run_import(
    config: HistocurateConfig, *, project: str | None = None, host: str | None = None
) -> ImportResult:
    """`histocurate import`: the project's point annotations into ``points.parquet``."""
    workspace = Workspace.of(config)
    with connect(credentials_of(config, host), policy_of(config)) as conn:
        return import_annotations(
            conn,
            project=project_of(config, project),
            points_path=workspace.points,
            rejects_path=workspace.import_rejects,
            assignments_path=workspace.assignments,
        )


def project_url(base_url: str, project_id: int) -> str:
    """Link to the project in Cytomine's web UI."""
    return f"{base_url.rstrip('/')}/#/project/{project_id}/images"
