"""Push a campaign's consensus nuclei back to Cytomine, as a separate layer, for review.

The nuclei are written by a dedicated user (keys ``CYTOMINE_CONSENSUS_PUBLIC_KEY`` /
``_PRIVATE_KEY``): its layer is apart from the pathologists'. Each nucleus is a polygon (or
a point at its centroid) on the tile's image of the campaign's review project (see
`histocurate.cytomine.push_stage`: the readers see the layer there and cannot edit it),
with its term, or all proposed terms when the consensus left the type undetermined. The
projects record the layer's user (property ``histocurate.consensus_layer``), so that an
import never takes those annotations for clicks.

Idempotent. For each image the layer's annotations are listed and matched to the nuclei
(same terms, centroid within `MATCH_PX`: the server may round a geometry): only missing
nuclei are posted and stale ones deleted; a second push changes nothing. A post whose
answer was lost is never re-sent blindly: the image is listed again first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from histocurate.cytomine.client import Connection
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.retry import CytomineCallError
from histocurate.labels import UNKNOWN
from histocurate.runs import ItemOutcome

MATCH_PX = 0.75
CHUNK = 100


@dataclass(frozen=True, slots=True)
class Nucleus:
    """One nucleus as it goes to Cytomine: WKT in Cytomine's coordinates and its terms."""

    wkt: str
    terms: tuple[int, ...]
    x: float
    y: float
    kind: str  # Point or Polygon


def _flip(geom: BaseGeometry, height: float) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.column_stack([xy[:, 0], height - xy[:, 1]]))


def nuclei_of_tile(
    rows: pd.DataFrame, *, height: float, term_by_label: dict[str, int], shape: str
) -> list[Nucleus]:
    """The consensus rows of one tile as Cytomine annotations (bottom-left origin)."""
    out = []
    for label, labels, x, y, polygon in zip(
        rows["label"], rows["labels"], rows["x"], rows["y"], rows["polygon"], strict=True
    ):
        given = [label] if isinstance(label, str) else [str(v) for v in labels]
        terms = tuple(sorted({term_by_label[lab or UNKNOWN.id] for lab in given}))
        if shape == "points":
            geom: BaseGeometry = shapely.Point(float(x), height - float(y))
        else:
            geom = _flip(shapely.from_wkb(polygon), height)
        centre = geom.centroid
        wkt = shapely.to_wkt(geom, rounding_precision=3)
        out.append(Nucleus(wkt, terms, centre.x, centre.y, geom.geom_type))
    return out


def _existing(
    conn: Connection, project_id: int, image_id: int, user_id: int
) -> list[dict[str, Any]]:
    return list_all(  # read whole, even if the server pages it
        conn,
        "annotation.json",
        f"list consensus layer of image {image_id}",
        project=project_id,
        image=image_id,
        user=user_id,
        showWKT=True,
        showTerm=True,
        showMeta=True,
    )


def match(wanted: list[Nucleus], existing: list[dict[str, Any]]) -> tuple[list[Nucleus], list[int]]:
    """(nuclei to post, annotation ids to delete): pairs of the same kind and terms and
    near centroids."""
    free: dict[tuple[tuple[int, ...], str], list[tuple[float, float, int]]] = {}
    for a in existing:
        geom = shapely.from_wkt(a.get("location") or "", on_invalid="ignore")
        if geom is None or geom.is_empty:
            continue
        key = (tuple(sorted({int(t) for t in a.get("term") or []})), geom.geom_type)
        free.setdefault(key, []).append((geom.centroid.x, geom.centroid.y, int(a["id"])))
    missing = []
    for nucleus in wanted:
        options = free.get((nucleus.terms, nucleus.kind), [])
        far = [float(np.hypot(ox - nucleus.x, oy - nucleus.y)) for ox, oy, _ in options]
        best = int(np.argmin(far)) if far else None
        if best is not None and far[best] <= MATCH_PX:
            options.pop(best)
        else:
            missing.append(nucleus)
    stale = [aid for options in free.values() for _, _, aid in options]
    return missing, stale


def sync_image(
    conn: Connection, *, project_id: int, image_id: int, wanted: list[Nucleus], tile: str
) -> ItemOutcome:
    """Make the layer's annotations on one image equal to ``wanted``."""
    start = time.perf_counter()
    posted = removed = 0
    kept: int | None = None
    for attempt in range(conn.policy.attempts * 2):
        existing = _existing(conn, project_id, image_id, conn.user_id)
        missing, stale = match(wanted, existing)
        if kept is None:
            kept = len(wanted) - len(missing)
        if not missing and not stale:
            return ItemOutcome(
                tile,
                "done" if posted or removed else "skipped",
                count=len(wanted),
                seconds=time.perf_counter() - start,
                extra={"posted": posted, "removed": removed, "kept": kept, "image_id": image_id},
            )
        try:
            for aid in stale:
                try:
                    conn.delete(f"annotation/{aid}.json", f"remove stale nucleus {aid}")
                except CytomineCallError as exc:
                    if exc.status != 404:  # already gone (a lost answer)
                        raise
                removed += 1
            chunk = missing[:CHUNK]
            if chunk:
                body = [
                    {
                        "location": n.wkt,
                        "image": image_id,
                        "project": project_id,
                        "term": list(n.terms),
                    }
                    for n in chunk
                ]
                data = json.dumps(body)
                conn.once(
                    f"post {len(chunk)} nuclei on image {image_id}",
                    partial(conn.client.post, "annotation.json", data=data),
                )
                posted += len(chunk)
        except CytomineCallError as exc:
            if not exc.transient:
                raise
            conn.retries += 1
            time.sleep(conn.policy.delay(min(attempt, 4)))
    raise CytomineCallError(f"push nuclei to image {image_id}", None, "gave up after retries")
