"""What an import reads from Cytomine: the campaign's projects, their images mapped to tiles,
who was assigned what, and every annotation of every image (user and, on request,
reviewed ones), one listing per image.

A campaign is its project and, in a per-reader campaign, the projects ``<project> /
<reader>``. Images are mapped to tiles by their ``histocurate.tile_id`` property (blind
mode replaces names); the file name is used only for images without it, and only for a
tile the assignments know. Every image instance is read, also two of the same tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from histocurate.cytomine.client import Connection
from histocurate.cytomine.export import READER_SEPARATOR
from histocurate.cytomine.images import (
    ASSIGNMENT_KEY,
    PROJECT_CLASS,
    TILE_KEY,
    ProjectImages,
    properties,
)
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.projects import (
    ProjectInfo,
    info_of,
    project_info,
    project_members,
    projects_named,
)
from histocurate.cytomine.retry import CytomineCallError

CONSENSUS_LAYER_KEY = "histocurate.consensus_layer"
RAW_COLUMNS = [
    "id",
    "image",
    "user",
    "location",
    "term",
    "userByTerm",
    "created",
    "updated",
    "kind",
    "parent",
    "reviewUser",
]
IMAGE_COLUMNS = ["image_id", "project_id", "tile_id", "width", "height"]


@dataclass
class Campaign:
    """The campaign as the server holds it."""

    main: ProjectInfo
    projects: list[ProjectInfo]
    images: pd.DataFrame  # IMAGE_COLUMNS, tile_id None when not a known tile
    assigned: set[tuple[str, str]]  # (tile, annotator)
    layer_users: set[str]  # users whose annotations are a pushed consensus layer
    usernames: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def campaign_projects(conn: Connection, name: str) -> list[ProjectInfo]:
    """The project ``name`` and its per-reader projects (main first)."""
    main = project_info(conn, name)
    readers = [info_of(conn, p) for p in projects_named(conn, name + READER_SEPARATOR)]
    return [main, *readers]


def read_campaign(conn: Connection, name: str, assignments: pd.DataFrame) -> Campaign:
    """Projects, images (with tiles) and assignments of campaign ``name``.

    ``assignments``: the workspace's rows for the project (may be empty: then the image
    properties the export wrote say who was assigned).
    """
    projects = campaign_projects(conn, name)
    known = set(assignments["tile_id"]) if len(assignments) else None
    rows, notes = [], []
    from_props: set[tuple[str, str]] = set()
    for info in projects:
        found = ProjectImages.read(conn, info.id)
        for tile_id, same in found.by_tile.items():
            if len(same) > 1:
                ids = ", ".join(str(i["id"]) for i in same)
                notes.append(
                    f"tile {tile_id} has {len(same)} images in project {info.name!r} (ids {ids}): "
                    "the annotations of all of them are imported"
                )
        for image in found.images:
            props = found.props.get(int(image["id"]), {})
            tile = _tile(image, props, known)
            if tile is not None and ASSIGNMENT_KEY in props:
                who = str(props[ASSIGNMENT_KEY].get("value") or "")
                from_props |= {(tile, a) for a in who.split(",") if a}
            rows.append((int(image["id"]), info.id, tile, image.get("width"), image.get("height")))
    assigned = (
        set(zip(assignments["tile_id"], assignments["annotator"], strict=True))
        if len(assignments)
        else from_props
    )
    layer = properties(conn, PROJECT_CLASS, projects[0].id).get(CONSENSUS_LAYER_KEY)
    layer_users = {u for u in str((layer or {}).get("value") or "").split(",") if u}
    table = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    return Campaign(projects[0], projects, table, assigned, layer_users, notes=notes)


def _tile(
    image: dict[str, Any], props: dict[str, dict[str, Any]], known: set[str] | None
) -> str | None:
    prop = props.get(TILE_KEY)
    if prop is not None and prop.get("value"):
        return str(prop["value"])
    name = str(image.get("instanceFilename") or "")
    tile = name.removesuffix(".png") if name.endswith(".png") else None
    return tile if tile is not None and (known is None or tile in known) else None


def _listing(
    conn: Connection, project_id: int, image_id: int, reviewed: bool
) -> list[dict[str, Any]]:
    """Every annotation of one image (all users): the query ``AnnotationCollection`` sends,
    kept as dicts (a model object per annotation costs a third of the import time)."""
    params = {
        "project": project_id,
        "image": image_id,
        "showWKT": True,
        "showTerm": True,
        "showMeta": True,
    }
    if reviewed:
        params["reviewed"] = True
    what = f"list {'reviewed ' if reviewed else ''}annotations of image {image_id}"
    found = list_all(conn, "annotation.json", what, **params)  # whole, even if paged
    kind = "reviewed" if reviewed else "user"
    return [
        {
            "id": a.get("id"),
            "image": a.get("image", image_id),
            "user": a.get("user"),
            "location": a.get("location"),
            "term": a.get("term") or [],
            "userByTerm": a.get("userByTerm"),
            "created": a.get("created"),
            "updated": a.get("updated"),
            "kind": kind,
            "parent": a.get("parentIdent"),
            "reviewUser": a.get("reviewUser"),
        }
        for a in found
    ]


def fetch_annotations(
    conn: Connection, campaign: Campaign, *, reviewed: str
) -> tuple[pd.DataFrame, dict[int, str]]:
    """All annotations of the campaign's images; and the images whose listing failed (id ->
    error: their previous points are kept, not counted as deleted)."""
    rows: list[dict[str, Any]] = []
    failed: dict[int, str] = {}
    for image_id, project_id in zip(
        campaign.images["image_id"], campaign.images["project_id"], strict=True
    ):
        try:
            rows += _listing(conn, int(project_id), int(image_id), reviewed=False)
            if reviewed != "exclude":
                rows += _listing(conn, int(project_id), int(image_id), reviewed=True)
        except CytomineCallError as exc:
            if exc.transient:
                raise  # the server stopped answering: nothing is written, a re-run resumes
            failed[int(image_id)] = str(exc)
    return pd.DataFrame(rows, columns=RAW_COLUMNS), failed


def usernames(conn: Connection, campaign: Campaign, user_ids: set[int]) -> dict[int, str]:
    """Usernames of the authors: the projects' members, then one lookup per other author
    (by numeric id: current servers look users up by id only)."""
    names: dict[int, str] = {}
    for info in campaign.projects:
        names.update(project_members(conn, info.id))
    for uid in sorted(user_ids - set(names)):  # authors who left the project
        try:
            names[uid] = str(conn.get(f"user/{uid}.json", f"get user {uid}")["username"])
        except CytomineCallError as exc:
            if exc.transient:
                raise
    return names
