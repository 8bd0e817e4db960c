"""Annotations and their terms: `SandboxDB` = `CoreDB` + `ImageDB` + these.

As on the real server, changing an annotation's terms does not touch its ``updated``
time (terms are separate ``AnnotationTerm`` objects); editing its geometry does. Importers
must therefore compare terms too, not only ``updated``.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import shapely
from shapely.errors import ShapelyError

from histocurate.cytomine.sandbox.db import PKG, BadRequest, NotFound, _ms, now_ms
from histocurate.cytomine.sandbox.images import ImageDB

_FLAG_TRUE = {"true", "1", "yes"}


def flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").lower() in _FLAG_TRUE


def _ints(value: str | None) -> list[int]:
    if not value:
        return []
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise BadRequest(f"not a list of ids: {value!r}") from None


def canonical_wkt(location: Any) -> str:
    """Validate a WKT geometry and return it re-written at full precision."""
    if not isinstance(location, str):
        raise BadRequest("annotation needs a WKT location")
    try:
        geom = shapely.from_wkt(location)
    except (ShapelyError, ValueError):
        raise BadRequest(f"invalid geometry: {location[:60]!r}") from None
    if geom is None or geom.is_empty:
        raise BadRequest("empty geometry")
    return str(shapely.to_wkt(geom, rounding_precision=-1, trim=True))


class SandboxDB(ImageDB):
    """The whole sandbox database."""

    def _terms_of(self, ids: Sequence[int]) -> dict[int, list[sqlite3.Row]]:
        found: dict[int, list[sqlite3.Row]] = defaultdict(list)
        for start in range(0, len(ids), 900):
            chunk = list(ids[start : start + 900])
            marks = ",".join("?" * len(chunk))
            rows = self._all(
                f"SELECT * FROM annotation_terms WHERE annotation_id IN ({marks}) ORDER BY id",
                chunk,
            )
            for r in rows:
                found[r["annotation_id"]].append(r)
        return found

    def _annotation_json(
        self, r: sqlite3.Row, terms: list[sqlite3.Row], params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        show_all = params is None
        params = params or {}
        out: dict[str, Any] = {"id": r["id"], "class": f"{PKG}.ontology.UserAnnotation"}
        if show_all or flag(params, "showMeta"):
            out.update(
                created=_ms(r["created"]), updated=_ms(r["updated"]), deleted=None,
                project=r["project_id"], image=r["image_id"], slice=None,
                user=r["user_id"], reviewed=False, countReviewedAnnotations=0,
                cropURL=f"/api/userannotation/{r['id']}/crop.png",
                smallCropURL=f"/api/userannotation/{r['id']}/crop.png?maxSize=256",
                url=f"/api/userannotation/{r['id']}/crop.png",
                imageURL=f"/#tabs-image-{r['project_id']}-{r['image_id']}-{r['id']}",
            )  # fmt: skip
        if show_all or flag(params, "showWKT"):
            out["location"] = r["location"]
        if show_all or flag(params, "showTerm"):
            by_term: dict[int, list[int]] = defaultdict(list)
            for t in terms:
                by_term[t["term_id"]].append(t["user_id"])
            out["term"] = list(by_term)
            out["userByTerm"] = [
                {"id": terms[0]["id"], "term": tid, "user": users} for tid, users in by_term.items()
            ]
        if show_all:
            geom = shapely.from_wkt(r["location"])
            centroid = geom.centroid
            out.update(
                geometryCompression=0.0, area=float(geom.area), areaUnit="PIXELS²",
                perimeter=float(geom.length), perimeterUnit="PIXELS",
                centroid={"x": centroid.x, "y": centroid.y}, rate=None,
            )  # fmt: skip
        return out

    def get_annotation(self, aid: int) -> dict[str, Any]:
        with self.lock:
            row = self._one("SELECT * FROM annotations WHERE id = ?", (aid,))
            if row is None:
                raise NotFound(f"Annotation {aid} not found")
            return self._annotation_json(row, self._terms_of([aid]).get(aid, []))

    def _check_terms(self, project_id: int, term_ids: list[int]) -> None:
        onto = self._one("SELECT ontology_id FROM projects WHERE id = ?", (project_id,))
        for tid in term_ids:
            if not self._one(
                "SELECT id FROM terms WHERE id = ? AND ontology_id = ?",
                (tid, onto[0] if onto else None),
            ):
                raise BadRequest(f"Term {tid} is not in the ontology of project {project_id}")

    def add_annotations(
        self, items: list[dict[str, Any]], user: sqlite3.Row
    ) -> list[dict[str, Any]]:
        """Create annotations (all or none); each needs location and image (project optional)."""
        with self.lock:
            prepared = []
            for data in items:
                image_id = data.get("image")
                if not isinstance(image_id, int):
                    raise BadRequest("annotation needs an image id")
                image = self.get_image(image_id)
                project_id = image["project"]
                if data.get("project") not in (None, project_id):
                    raise BadRequest(f"image {image_id} is not in project {data.get('project')}")
                self.check_member(project_id, user)
                terms = data.get("term") or []
                terms = [terms] if isinstance(terms, int) else list(terms)
                self._check_terms(project_id, terms)
                prepared.append((project_id, image_id, canonical_wkt(data.get("location")), terms))
            ids = self._ids(len(prepared))
            t = now_ms()
            self.conn.execute("BEGIN")
            for aid, (project_id, image_id, wkt, terms) in zip(ids, prepared, strict=True):
                self.conn.execute(
                    "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (aid, project_id, image_id, user["id"], wkt, t),
                )
                for tid in terms:
                    self.conn.execute(
                        "INSERT INTO annotation_terms VALUES (?, ?, ?, ?, ?)",
                        (self._id(), aid, tid, user["id"], t),
                    )
            self.conn.execute("COMMIT")
            return [self.get_annotation(aid) for aid in ids]

    def update_annotation(
        self, aid: int, data: dict[str, Any], user: sqlite3.Row
    ) -> dict[str, Any]:
        with self.lock:
            row = self._one("SELECT * FROM annotations WHERE id = ?", (aid,))
            if row is None:
                raise NotFound(f"Annotation {aid} not found")
            self.check_member(row["project_id"], user)
            if "location" in data and data["location"] is not None:
                self.conn.execute(
                    "UPDATE annotations SET location = ?, updated = ? WHERE id = ?",
                    (canonical_wkt(data["location"]), now_ms(), aid),
                )
            return self.get_annotation(aid)

    def delete_annotation(self, aid: int, user: sqlite3.Row) -> dict[str, Any]:
        with self.lock:
            before = self.get_annotation(aid)
            self.check_member(before["project"], user)
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM annotation_terms WHERE annotation_id = ?", (aid,))
            self.conn.execute("DELETE FROM annotations WHERE id = ?", (aid,))
            self.conn.execute("COMMIT")
            return before

    def add_annotation_term(
        self, aid: int, tid: int, user: sqlite3.Row, *, clear_before: bool = False
    ) -> dict[str, Any]:
        with self.lock:
            ann = self.get_annotation(aid)
            self.check_member(ann["project"], user)
            self._check_terms(ann["project"], [tid])
            self.conn.execute("BEGIN")
            if clear_before:
                self.conn.execute("DELETE FROM annotation_terms WHERE annotation_id = ?", (aid,))
            self.conn.execute(
                "INSERT OR IGNORE INTO annotation_terms VALUES (?, ?, ?, ?, ?)",
                (self._id(), aid, tid, user["id"], now_ms()),
            )
            self.conn.execute("COMMIT")
            return {"class": f"{PKG}.ontology.AnnotationTerm", "userannotation": aid,
                    "term": tid, "user": user["id"]}  # fmt: skip

    def delete_annotation_term(self, aid: int, tid: int, user: sqlite3.Row) -> dict[str, Any]:
        with self.lock:
            ann = self.get_annotation(aid)
            self.check_member(ann["project"], user)
            cur = self.conn.execute(
                "DELETE FROM annotation_terms WHERE annotation_id = ? AND term_id = ?", (aid, tid)
            )
            if cur.rowcount == 0:
                raise NotFound(f"Annotation {aid} has no term {tid}")
            return {"userannotation": aid, "term": tid, "user": user["id"]}

    def list_annotations(self, params: dict[str, str], user: sqlite3.Row) -> list[dict[str, Any]]:
        """The listing behind ``GET /api/annotation.json`` with its filters and show* flags."""
        where, args = [], []
        for single, plural, column in (
            ("project", None, "project_id"),
            ("image", "images", "image_id"),
            ("user", "users", "user_id"),
        ):
            ids = _ints(params.get(single)) + (_ints(params.get(plural)) if plural else [])
            if ids:
                where.append(f"{column} IN ({','.join('?' * len(ids))})")
                args.extend(ids)
        if not where:
            raise BadRequest("annotation listing needs a project, image or user filter")
        with self.lock:
            for pid in _ints(params.get("project")):
                self.check_member(pid, user)
            rows = self._all(
                f"SELECT * FROM annotations WHERE {' AND '.join(where)} ORDER BY id", args
            )
            terms = self._terms_of([r["id"] for r in rows]) if rows else {}
            wanted = set(_ints(params.get("term")) + _ints(params.get("terms")))
            out = []
            for r in rows:
                these = terms.get(r["id"], [])
                if wanted and not wanted & {t["term_id"] for t in these}:
                    continue
                out.append(self._annotation_json(r, these, params))
            return out

    def bulk_insert_points(
        self, rows: Sequence[tuple[int, int, int, float, float, int]], *, project_id: int
    ) -> int:
        """Insert (image_id, user_id, term_id, x, y, created_ms) points directly (benchmarks)."""
        with self.lock:
            ids = self._ids(2 * len(rows))
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, NULL)",
                [
                    (ids[2 * i], project_id, img, uid, f"POINT ({x!r} {y!r})", t)
                    for i, (img, uid, _, x, y, t) in enumerate(rows)
                ],
            )
            self.conn.executemany(
                "INSERT INTO annotation_terms VALUES (?, ?, ?, ?, ?)",
                [
                    (ids[2 * i + 1], ids[2 * i], term, uid, t)
                    for i, (_, uid, term, _, _, t) in enumerate(rows)
                ],
            )
            self.conn.execute("COMMIT")
            return len(rows)
