"""Raw Cytomine annotations -> points (tile pixels, top-left origin) and rejects, with a reason
for every annotation that is not a point.

Coordinates. A point is continuous image coordinates in pixels; pixel (col i, row j)
covers [i, i+1) x [j, j+1), its centre is (i + 0.5, j + 0.5). Cytomine's origin is the
bottom-left corner, ours the top-left: ``x = x_c``, ``y = height - y_c``; exact for clicks
on a 1/256 px grid, so export -> import round trips exactly.

Terms. On Cytomine a term is given by a user (``userByTerm``); a relabel by someone else
(a reviewer, a manager) adds that user's term rather than replacing the author's. The
label is the creator's own term (``label_by="creator"``, the default) or the other user's
(``"reviewer"``); when that side gave none, the other side's term is used. More than one
term on the chosen side is ``several_terms``. ``labelled_by`` records whose term it is.

Reviews (``reviewed``): ``exclude`` imports user annotations only; ``include`` imports the
reviewed copies too, and a reviewed copy replaces the annotation it reviews (which is then
``superseded_by_review``); ``only`` keeps reviewed copies and sets every user annotation
aside (``not_reviewed`` or ``superseded_by_review``).

Assignment. A point by a user who was not assigned the tile (another reader, the project
manager) is ``not_assigned`` unless ``keep_unassigned`` (then kept, ``assigned=False``).
Annotations of a pushed consensus layer are ``consensus_layer``, never points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely

from histocurate.cytomine.projects import ProjectInfo


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import reads what it finds (plain values: they travel to a Prefect task)."""

    reviewed: str = "exclude"  # exclude | include | only
    label_by: str = "creator"  # creator | reviewer
    polygons: str = "reject"  # reject | centroid
    keep_unassigned: bool = False


def _time(values: pd.Series) -> pd.Series:
    ms = pd.to_numeric(values, errors="coerce")
    return pd.to_datetime(ms, unit="ms", utc=True).astype("datetime64[ms, UTC]")


def _given(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def _chosen_terms(
    terms: Any, by_term: Any, creator: Any, reviewer: Any, label_by: str
) -> tuple[list[int], Any]:
    """(the terms of the side chosen, the user who gave them) of one annotation."""
    all_terms = sorted({int(t) for t in (terms or [])})
    if _given(reviewer):  # a reviewed copy carries the reviewer's terms
        return all_terms, reviewer
    if not isinstance(by_term, list) or not by_term:
        return all_terms, creator
    creator_id = int(creator) if _given(creator) else None
    own: set[int] = set()
    others: dict[int, set[int]] = {}
    for entry in by_term:
        term = int(entry["term"])
        users = {int(u) for u in entry.get("user") or []}
        if creator_id in users:
            own.add(term)
        if users - {creator_id}:
            others.setdefault(term, set()).update(users - {creator_id})
    if not own and not others:
        return all_terms, creator
    if (own and label_by == "creator") or not others:
        return sorted(own), creator
    givers = sorted({u for users in others.values() for u in users})
    return sorted(others), givers[0]


def convert(
    raw: pd.DataFrame,
    *,
    project: str,
    info: ProjectInfo,
    images: pd.DataFrame,
    usernames: Mapping[int, str],
    assigned: set[tuple[str, str]],
    layer_users: set[str],
    options: ImportOptions,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw annotations into points and rejects with a reason (see the module doc).

    ``raw``: fetch.RAW_COLUMNS. ``images``: image_id, tile_id (None if not a known tile),
    width, height.
    """
    df = raw.merge(images, left_on="image", right_on="image_id", how="left")
    df = df.reset_index(drop=True)
    chosen = [
        _chosen_terms(t, b, c, r, options.label_by)
        for t, b, c, r in zip(
            df["term"], df["userByTerm"], df["user"], df["reviewUser"], strict=True
        )
    ]
    terms = pd.Series([c[0] for c in chosen], index=df.index, dtype=object)
    givers = [c[1] for c in chosen]
    all_terms = df["term"].map(lambda t: sorted({int(x) for x in (t or [])}))
    geoms = shapely.from_wkt(df["location"].fillna("").to_numpy(), on_invalid="ignore")
    valid = ~pd.isna(geoms)
    type_id = np.where(valid, shapely.get_type_id(geoms), -1)
    is_point = type_id == 0
    polygonal = np.isin(type_id, (3, 6))
    as_centroid = polygonal & (options.polygons == "centroid")
    where = np.where(as_centroid, shapely.centroid(np.where(as_centroid, geoms, None)), geoms)
    usable = is_point | as_centroid
    xs = shapely.get_x(np.where(usable, where, None))
    ys = shapely.get_y(np.where(usable, where, None))
    height = df["height"].to_numpy(dtype=float)
    width = df["width"].to_numpy(dtype=float)
    label_by_term = info.label_by_term
    n_terms = terms.map(len).to_numpy()
    first = terms.map(lambda t: t[0] if t else -1)
    user = df["user"].map(lambda u: usernames.get(int(u)) if pd.notna(u) else None)
    reviewed = (df["kind"] == "reviewed").to_numpy()
    review_parents = set(df.loc[reviewed, "parent"].dropna().astype("int64"))
    reason = np.full(len(df), "", dtype=object)
    detail = np.full(len(df), "", dtype=object)

    def mark(mask: np.ndarray, why: str, what: Any) -> None:
        todo = mask & (reason == "")
        reason[todo] = why
        detail[todo] = what[todo] if isinstance(what, np.ndarray) else what

    known = df["tile_id"].notna().to_numpy()
    mark(~known, "unknown_image", "image is not an exported tile of this project")
    mark(user.isin(layer_users).to_numpy(), "consensus_layer", "pushed consensus layer")
    superseded = ~reviewed & df["id"].isin(review_parents).to_numpy()
    mark(superseded, "superseded_by_review", "a reviewed copy of it is imported")
    if options.reviewed == "only":
        mark(~reviewed, "not_reviewed", "not reviewed (--reviewed only)")
    mark(~valid, "bad_geometry", "location is not valid WKT")
    other = valid & ~usable
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
        outside = usable & ((xs < 0) | (xs > width) | (ys < 0) | (ys > height))
    mark(outside, "outside_image", "point outside the image")
    mark(user.isna().to_numpy(), "unknown_user", "author unknown to the server")
    is_assigned = np.array(
        [(t, u) in assigned for t, u in zip(df["tile_id"], user, strict=True)], dtype=bool
    )
    if not options.keep_unassigned:
        mark(~is_assigned, "not_assigned", "author was not assigned this tile")

    updated = _time(df["updated"].where(df["updated"].notna(), df["created"]))
    ok = reason == ""
    labelled_by = [
        usernames.get(int(g)) if g is not None and not pd.isna(g) else None for g in givers
    ]
    points = pd.DataFrame(
        {
            "project": project,
            "annotation_id": df["id"].astype("int64")[ok],
            "tile_id": df["tile_id"][ok],
            "image_id": df["image"].astype("int64")[ok],
            "annotator": user[ok],
            "x": xs[ok],
            "y": (height - ys)[ok],
            "label": first[ok].map(label_by_term),
            "term_ids": all_terms[ok],
            "labelled_by": pd.Series(labelled_by, index=df.index, dtype=object)[ok],
            "reviewed": reviewed[ok],
            "assigned": is_assigned[ok],
            "shape": np.where(as_centroid, "centroid", "point")[ok],
            "updated_at": updated[ok],
        }
    )
    points["labelled_by"] = points["labelled_by"].fillna(points["annotator"])
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
            "term_ids": all_terms[~ok],
            "reviewed": reviewed[~ok],
            "updated_at": updated[~ok],
        }
    )
    return points.reset_index(drop=True), rejects.reset_index(drop=True)
