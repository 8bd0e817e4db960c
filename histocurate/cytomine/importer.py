"""Import point annotations from Cytomine into ``points.parquet``, incrementally.

Coordinates. A point is continuous image coordinates in pixels; pixel (col i, row j)
covers [i, i+1) x [j, j+1), its centre is (i + 0.5, j + 0.5). Cytomine's origin is the
bottom-left corner, ours the top-left: ``x = x_c``, ``y = height - y_c``. Both are exact
in floating point for clicks on a 1/256 px grid (what the simulated pathologists post)
and for any coordinate the server sends that way, so export -> import round trips exactly.

Incremental and idempotent. Every import lists all annotations of the project's images
(the only way to see deletions) and compares each annotation with what the tables hold,
by id and content (``updated`` time, geometry, terms, author: on Cytomine a relabel does
not change ``updated``). Only when something differs are the tables rewritten, so a
second import with no change writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from cytomine.models import User

from data_schema.import_rejects import IMPORT_REJECTS
from data_schema.points import POINTS
from histocurate.cytomine import api
from histocurate.cytomine.client import Connection, CytomineCallError
from histocurate.cytomine.export import load_assignments
from histocurate.io import read_table, write_table

log = logging.getLogger(__name__)
COUNT_COLUMNS = ["annotator", "points", "new", "changed", "deleted", "rejected", "unchanged"]


@dataclass
class ImportResult:
    """What an import found and changed."""

    project: str
    project_id: int
    images: int
    annotations: int
    points: pd.DataFrame
    rejects: pd.DataFrame
    counts: pd.DataFrame  # per annotator: COUNT_COLUMNS
    written: bool
    retries: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, int]:
        return {c: int(self.counts[c].sum()) for c in COUNT_COLUMNS[1:]}


def _time(values: pd.Series) -> pd.Series:
    ms = pd.to_numeric(values, errors="coerce")
    return pd.to_datetime(ms, unit="ms", utc=True).astype("datetime64[ms, UTC]")


def convert(
    raw: pd.DataFrame,
    *,
    project: str,
    info: api.ProjectInfo,
    images: pd.DataFrame,
    usernames: dict[int, str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw annotations into points (tile pixels, top-left) and rejects with a reason.

    ``raw``: id, image, user, location, term (list), created, updated.
    ``images``: image_id, tile_id (None if not a known tile), width, height.
    """
    df = raw.merge(images, left_on="image", right_on="image_id", how="left")
    terms = df["term"].map(lambda t: sorted({int(x) for x in (t or [])}))
    geoms = shapely.from_wkt(df["location"].fillna("").to_numpy(), on_invalid="ignore")
    is_point = shapely.get_type_id(geoms) == 0
    xs, ys = (
        shapely.get_x(np.where(is_point, geoms, None)),
        shapely.get_y(np.where(is_point, geoms, None)),
    )
    height = df["height"].to_numpy(dtype=float)
    width = df["width"].to_numpy(dtype=float)
    label_by_term = info.label_by_term
    n_terms = terms.map(len).to_numpy()
    first = terms.map(lambda t: t[0] if t else -1)
    reason = np.full(len(df), "", dtype=object)
    detail = np.full(len(df), "", dtype=object)

    def mark(mask: np.ndarray, why: str, what: Any) -> None:
        todo = mask & (reason == "")
        reason[todo] = why
        detail[todo] = what[todo] if isinstance(what, np.ndarray) else what

    known = df["tile_id"].notna().to_numpy()
    mark(~known, "unknown_image", "image is not an exported tile of this project")
    valid = ~pd.isna(geoms)
    mark(~valid, "bad_geometry", "location is not valid WKT")
    other = valid & ~is_point
    kinds = np.full(len(df), "", dtype=object)
    kinds[other] = [g.geom_type for g in geoms[other]]
    mark(other, "not_a_point", kinds)
    mark(n_terms == 0, "no_term", "annotation has no term")
    mark(n_terms > 1, "several_terms", terms.map(str).to_numpy())
    unknown_term = ~first.isin(list(label_by_term)).to_numpy()
    mark(
        unknown_term,
        "unknown_term",
        first.map(lambda t: f"term {t} is not a histocurate label").to_numpy(),
    )
    with np.errstate(invalid="ignore"):
        outside = is_point & ((xs < 0) | (xs > width) | (ys < 0) | (ys > height))
    mark(outside, "outside_image", "point outside the image")
    user = df["user"].map(lambda u: usernames.get(int(u)) if pd.notna(u) else None)
    mark(user.isna().to_numpy(), "unknown_user", "author unknown to the server")

    updated = _time(df["updated"].where(df["updated"].notna(), df["created"]))
    ok = reason == ""
    points = pd.DataFrame(
        {
            "annotation_id": df["id"].astype("int64")[ok],
            "tile_id": df["tile_id"][ok],
            "annotator": user[ok],
            "x": xs[ok],
            "y": (height - ys)[ok],
            "label": first[ok].map(label_by_term),
            "term_ids": terms[ok],
            "updated_at": updated[ok],
        }
    )
    rejects = pd.DataFrame(
        {
            "annotation_id": df["id"].astype("int64")[~ok],
            "project": project,
            "image_id": df["image"].astype("int64")[~ok],
            "tile_id": df["tile_id"][~ok],
            "annotator": user[~ok],
            "reason": reason[~ok],
            "detail": detail[~ok].astype(str),
            "location": df["location"].fillna("")[~ok],
            "term_ids": terms[~ok],
            "updated_at": updated[~ok],
        }
    )
    return points.reset_index(drop=True), rejects.reset_index(drop=True)


def _signatures(points: pd.DataFrame, rejects: pd.DataFrame) -> pd.DataFrame:
    """One row per annotation id: its author and a string that changes with any content."""

    def terms(values: pd.Series) -> list[str]:
        return [str([int(t) for t in v]) for v in values]

    p_sig = [
        f"{t}|{float(x).hex()}|{float(y).hex()}|{lab}|{tm}|{u}"
        for t, x, y, lab, tm, u in zip(
            points["tile_id"], points["x"], points["y"], points["label"],
            terms(points["term_ids"]), points["updated_at"].astype(str), strict=True,
        )
    ]  # fmt: skip
    r_sig = [
        f"{why}|{loc}|{tm}|{u}"
        for why, loc, tm, u in zip(
            rejects["reason"], rejects["location"], terms(rejects["term_ids"]),
            rejects["updated_at"].astype(str), strict=True,
        )
    ]  # fmt: skip
    return pd.DataFrame(
        {
            "annotator": [*points["annotator"], *rejects["annotator"]],
            "sig": p_sig + r_sig,
        },
        index=pd.Index([*points["annotation_id"], *rejects["annotation_id"]], dtype="int64"),
    ).fillna({"annotator": "(unknown)"})


def count_changes(
    old_points: pd.DataFrame, old_rejects: pd.DataFrame, points: pd.DataFrame, rejects: pd.DataFrame
) -> pd.DataFrame:
    """Per annotator: points now, new / changed / deleted since the last import, rejects."""
    old, new = _signatures(old_points, old_rejects), _signatures(points, rejects)
    common = new.index.intersection(old.index)
    status = pd.Series("new", index=new.index)
    status[common] = np.where(
        new.loc[common, "sig"] == old.loc[common, "sig"], "unchanged", "changed"
    )
    rows = pd.DataFrame({"annotator": new["annotator"], "status": status.to_numpy()})
    gone = old.index.difference(new.index)
    rows = pd.concat(
        [rows, pd.DataFrame({"annotator": old.loc[gone, "annotator"], "status": "deleted"})]
    )
    counts = pd.crosstab(rows["annotator"], rows["status"]) if len(rows) else pd.DataFrame()
    counts = counts.reindex(columns=["new", "changed", "deleted", "unchanged"], fill_value=0)
    counts["points"] = points.groupby("annotator").size()
    counts["rejected"] = (
        rejects.assign(a=rejects["annotator"].fillna("(unknown)")).groupby("a").size()
    )
    counts = counts.fillna(0).astype("int64").rename_axis(index="annotator", columns=None)
    counts = counts.reset_index()
    return counts.reindex(columns=COUNT_COLUMNS).sort_values("annotator").reset_index(drop=True)


def _fetch_user(uid: int) -> Any:
    return User().fetch(uid)


def _usernames(conn: Connection, project_id: int, user_ids: set[int]) -> dict[int, str]:
    names = api.project_members(conn, project_id)
    for uid in sorted(user_ids - set(names)):  # authors who left the project
        try:
            names[uid] = str(conn.call(f"get user {uid}", partial(_fetch_user, uid)).username)
        except CytomineCallError as exc:
            if exc.transient:
                raise
    return names


def fetch_raw(conn: Connection, info: api.ProjectInfo) -> tuple[pd.DataFrame, list[Any]]:
    """All annotations of every image of the project (one listing per image)."""
    images = sorted(api.project_images(conn, info.id).values(), key=lambda i: i.id)
    rows: list[dict[str, Any]] = []
    for image in images:
        rows += api.annotations_of_image(conn, info.id, int(image.id))
    columns = ["id", "image", "user", "location", "term", "created", "updated"]
    return pd.DataFrame(rows, columns=columns), images


def import_annotations(
    conn: Connection,
    *,
    project: str,
    points_path: Path,
    rejects_path: Path,
    assignments_path: Path | None = None,
) -> ImportResult:
    """Bring ``points_path`` and ``rejects_path`` up to date with the project on Cytomine."""
    info = api.project_info(conn, project)
    raw, images = fetch_raw(conn, info)
    assigned = load_assignments(assignments_path, project) if assignments_path else None
    known = set(assigned["tile_id"]) if assigned is not None and len(assigned) else None
    table = pd.DataFrame(
        {
            "image_id": [int(i.id) for i in images],
            "tile_id": [_tile_of(str(i.instanceFilename), known) for i in images],
            "width": [i.width for i in images],
            "height": [i.height for i in images],
        }
    )
    users = {int(u) for u in raw["user"].dropna()}
    points, rejects = convert(
        raw, project=project, info=info, images=table, usernames=_usernames(conn, info.id, users)
    )
    project_tiles = set(table["tile_id"].dropna())
    old_points = _read(points_path, POINTS)
    old_rejects = _read(rejects_path, IMPORT_REJECTS)
    mine_p = old_points["tile_id"].isin(project_tiles)
    mine_r = old_rejects["project"] == project
    counts = count_changes(old_points[mine_p], old_rejects[mine_r], points, rejects)
    changed = bool(counts[["new", "changed", "deleted"]].to_numpy().sum())
    written = changed or not points_path.exists() or not rejects_path.exists()
    if written:
        all_points = pd.concat([old_points[~mine_p], points], ignore_index=True)
        all_rejects = pd.concat([old_rejects[~mine_r], rejects], ignore_index=True)
        write_table(all_points.sort_values(["tile_id", "annotation_id"]), points_path, POINTS)
        write_table(all_rejects.sort_values("annotation_id"), rejects_path, IMPORT_REJECTS)
    return ImportResult(
        project, info.id, len(images), len(raw), points, rejects, counts, written,
        conn.retries, {str(k): int(v) for k, v in rejects["reason"].value_counts().items()},
    )  # fmt: skip


def _tile_of(filename: str, known: set[str] | None) -> str | None:
    tile = filename.removesuffix(".png")
    return tile if known is None or tile in known else None


def _read(path: Path, schema: Any) -> pd.DataFrame:
    if Path(path).exists():
        return read_table(path, schema)
    return schema.to_arrow().empty_table().to_pandas()
