"""Annotations, their terms and their reviews: `SandboxDB` = `CoreDB` + `ImageDB` + these.

As on the real server:

* terms are separate (annotation, term, user) rows: who gave a term is kept
  (``userByTerm``), ``clearBefore`` and term deletion remove only the caller's own terms,
  and changing terms does not touch the annotation's ``updated`` (geometry edits do);
* in a restricted project a contributor may edit only their own annotations;
* a review is a copy (a ReviewedAnnotation, possibly with other terms) listed only with
  ``reviewed=true``; the reviewed annotation itself stays, flagged ``reviewed``;
* a listing needs a project or an image (400 otherwise), answers the show groups asked
  (basic + meta + term when none is), newest first, its ``created``/``updated`` numbers.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import shapely
from shapely.errors import ShapelyError

from histocurate.demo.sandbox.db import PKG, BadRequest, Forbidden, NotFound, _ms, now_ms
from histocurate.demo.sandbox.images import ImageDB

_FLAG_TRUE = {"true", "1", "yes"}
SHOW = ("showBasic", "showMeta", "showWKT", "showGIS", "showTerm", "showUser", "showImage")


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

    def _reviewed_ids(self, ids: Sequence[int]) -> set[int]:
        out: set[int] = set()
        for start in range(0, len(ids), 900):
            chunk = list(ids[start : start + 900])
            marks = ",".join("?" * len(chunk))
            out |= {
                r[0]
                for r in self._all(
                    f"SELECT parent_id FROM reviewed WHERE parent_id IN ({marks})", chunk
                )
            }
        return out

    def _json(
        self,
        r: sqlite3.Row,
        by_term: dict[int, list[int]],
        show: set[str],
        extra: dict[str, Any],
        listing: bool = False,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"id": r["id"], **extra}
        if "showMeta" in show:
            # The listing's times are numbers (SQL ``extract(epoch)*1000``); the domain
            # object's JSON (one annotation, a create's answer) has them as strings.
            when = (lambda v: v) if listing else _ms
            out.update(
                created=when(r["created"]),
                updated=when(r["updated"]),
                deleted=None,
                project=r["project_id"],
                image=r["image_id"],
                slice=None,
                user=r["user_id"],
                cropURL=f"/api/userannotation/{r['id']}/crop.png",
            )
        if "showWKT" in show:
            out["location"] = r["location"]
        if "showTerm" in show:
            out["term"] = list(by_term)
            out["userByTerm"] = [{"id": r["id"], "term": t, "user": u} for t, u in by_term.items()]
        if "showGIS" in show:
            geom = shapely.from_wkt(r["location"])
            out.update(
                area=float(geom.area),
                perimeter=float(geom.length),
                centroid={"x": geom.centroid.x, "y": geom.centroid.y},
            )
        return out

    def _user_json(
        self,
        r: sqlite3.Row,
        terms: list[sqlite3.Row],
        show: set[str],
        reviewed: bool,
        listing: bool = False,
    ) -> dict[str, Any]:
        by_term: dict[int, list[int]] = defaultdict(list)
        for t in terms:
            by_term[t["term_id"]].append(t["user_id"])
        extra = {"class": f"{PKG}.ontology.UserAnnotation"}
        out = self._json(r, by_term, show, extra, listing)
        if "showMeta" in show:
            out.update(reviewed=reviewed, countReviewedAnnotations=int(reviewed))
        return out

    def _reviewed_json(
        self, r: sqlite3.Row, show: set[str], listing: bool = False
    ) -> dict[str, Any]:
        by_term = {int(t): [r["review_user_id"]] for t in json.loads(r["terms"])}
        extra = {
            "class": f"{PKG}.ontology.ReviewedAnnotation",
            "parentIdent": r["parent_id"],
            "parentClassName": f"{PKG}.ontology.UserAnnotation",
            "reviewUser": r["review_user_id"],
        }
        return self._json(r, by_term, show, extra, listing)

    def get_annotation(self, aid: int) -> dict[str, Any]:
        with self.lock:
            row = self._row("annotations", aid, "Annotation")
            terms = self._terms_of([aid]).get(aid, [])
            return self._user_json(row, terms, set(SHOW), bool(self._reviewed_ids([aid])))

    def _check_terms(self, project_id: int, term_ids: list[int]) -> None:
        onto = self._one("SELECT ontology_id FROM projects WHERE id = ?", (project_id,))
        for tid in term_ids:
            if not self._one(
                "SELECT id FROM terms WHERE id = ? AND ontology_id = ?",
                (tid, onto[0] if onto else None),
            ):
                raise BadRequest(f"Term {tid} is not in the ontology of project {project_id}")

    def _check_editor(self, row: sqlite3.Row, user: sqlite3.Row) -> None:
        """In a restricted project only the author and managers may change an annotation."""
        self.check_member(row["project_id"], user)
        project = self._row("projects", row["project_id"], "Project")
        if (
            project["is_restricted"]
            and row["user_id"] != user["id"]
            and not self.is_manager(row["project_id"], user)
        ):
            raise Forbidden(
                f"project {row['project_id']} is restricted: {user['username']} may edit only "
                "their own annotations"
            )

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
                project_id = self.get_image(image_id)["project"]
                if data.get("project") not in (None, project_id):
                    raise BadRequest(f"image {image_id} is not in project {data.get('project')}")
                self.check_member(project_id, user)
                terms = data.get("term") or []
                terms = [terms] if isinstance(terms, int) else list(dict.fromkeys(terms))
                self._check_terms(project_id, terms)
                prepared.append((project_id, image_id, canonical_wkt(data.get("location")), terms))
            ids, t = self._ids(len(prepared)), now_ms()
            self.conn.execute("BEGIN")
            for aid, (project_id, image_id, wkt, terms) in zip(ids, prepared, strict=True):
                self.conn.execute(
                    "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (aid, project_id, image_id, user["id"], wkt, t, t),
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
            self._check_editor(self._row("annotations", aid, "Annotation"), user)
            if data.get("location") is not None:
                self.conn.execute(
                    "UPDATE annotations SET location = ?, updated = ? WHERE id = ?",
                    (canonical_wkt(data["location"]), now_ms(), aid),
                )
            return self.get_annotation(aid)

    def delete_annotation(self, aid: int, user: sqlite3.Row) -> dict[str, Any]:
        with self.lock:
            before = self.get_annotation(aid)
            self._check_editor(self._row("annotations", aid, "Annotation"), user)
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM annotation_terms WHERE annotation_id = ?", (aid,))
            self.conn.execute("DELETE FROM annotations WHERE id = ?", (aid,))
            self.conn.execute("COMMIT")
            return before

    def add_annotation_term(
        self,
        aid: int,
        tid: int,
        user: sqlite3.Row,
        *,
        clear_before: bool = False,
        clear_for_all: bool = False,
    ) -> dict[str, Any]:
        """Add the caller's term; ``clear_before`` first removes the caller's own terms
        (everyone's with ``clear_for_all``)."""
        with self.lock:
            row = self._row("annotations", aid, "Annotation")
            self._check_editor(row, user)
            self._check_terms(row["project_id"], [tid])
            self.conn.execute("BEGIN")
            if clear_before and clear_for_all:
                self.conn.execute("DELETE FROM annotation_terms WHERE annotation_id = ?", (aid,))
            elif clear_before:
                self.conn.execute(
                    "DELETE FROM annotation_terms WHERE annotation_id = ? AND user_id = ?",
                    (aid, user["id"]),
                )
            self.conn.execute(
                "INSERT OR IGNORE INTO annotation_terms VALUES (?, ?, ?, ?, ?)",
                (self._id(), aid, tid, user["id"], now_ms()),
            )
            self.conn.execute("COMMIT")
            return {
                "class": f"{PKG}.ontology.AnnotationTerm",
                "userannotation": aid,
                "term": tid,
                "user": user["id"],
            }

    def delete_annotation_term(self, aid: int, tid: int, user: sqlite3.Row) -> dict[str, Any]:
        """Remove the caller's own term (other users' stay)."""
        with self.lock:
            self._check_editor(self._row("annotations", aid, "Annotation"), user)
            cur = self.conn.execute(
                "DELETE FROM annotation_terms WHERE annotation_id = ? AND term_id = ? AND "
                "user_id = ?",
                (aid, tid, user["id"]),
            )
            if cur.rowcount == 0:
                raise NotFound(f"Annotation {aid} has no term {tid} of {user['username']}")
            return {"userannotation": aid, "term": tid, "user": user["id"]}

    def review(self, aid: int, user: sqlite3.Row, terms: list[int] | None = None) -> dict[str, Any]:
        """A manager accepts an annotation (with its terms, or ``terms``): the copy is made."""
        with self.lock:
            row = self._row("annotations", aid, "Annotation")
            self.check_manager(row["project_id"], user)
            if self._one("SELECT id FROM reviewed WHERE parent_id = ?", (aid,)):
                raise BadRequest(f"Annotation {aid} is already reviewed")
            if terms is None:
                terms = list(dict.fromkeys(t["term_id"] for t in self._terms_of([aid])[aid]))
            self._check_terms(row["project_id"], terms)
            rid, t = self._id(), now_ms()
            self.conn.execute(
                "INSERT INTO reviewed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    aid,
                    row["project_id"],
                    row["image_id"],
                    row["user_id"],
                    user["id"],
                    row["location"],
                    json.dumps(terms),
                    t,
                    t,
                ),
            )
            return self._reviewed_json(self._row("reviewed", rid, "ReviewedAnnotation"), set(SHOW))

    def list_annotations(self, params: dict[str, str], user: sqlite3.Row) -> list[dict[str, Any]]:
        """The listing behind ``GET /api/annotation.json`` with its filters and show groups."""
        reviewed = flag(params, "reviewed")
        table = "reviewed" if reviewed else "annotations"
        where, args = [], []
        users = "review_user_id" if reviewed else "user_id"
        for names, column in (
            (("project",), "project_id"),
            (("image", "images"), "image_id"),
            (("user", "users"), "user_id"),
            (("reviewUsers",), users),
        ):
            ids = [i for name in names for i in _ints(params.get(name))]
            if ids:
                where.append(f"{column} IN ({','.join('?' * len(ids))})")
                args.extend(ids)
        if not (
            _ints(params.get("project"))
            or _ints(params.get("image"))
            or _ints(params.get("images"))
        ):
            raise BadRequest("annotation listing: a project, an image or a slice must be set")
        for name, op in (("afterThan", ">"), ("beforeThan", "<")):
            if params.get(name):
                where.append(f"created {op} ?")
                args.append(int(params[name]))
        show = {s for s in SHOW if flag(params, s)} or {"showBasic", "showMeta", "showTerm"}
        with self.lock:
            for pid in _ints(params.get("project")):
                self.check_member(pid, user)
            for iid in _ints(params.get("image")) + _ints(params.get("images")):
                self.check_member(self.get_image(iid)["project"], user)
            rows = self._all(
                f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY id DESC", args
            )
            wanted = set(_ints(params.get("term")) + _ints(params.get("terms")))
            if reviewed:
                return [
                    self._reviewed_json(r, show, listing=True)
                    for r in rows
                    if not wanted or wanted & set(json.loads(r["terms"]))
                ]
            ids = [r["id"] for r in rows]
            terms = self._terms_of(ids) if rows else {}
            done = self._reviewed_ids(ids) if rows else set()
            result = []
            for r in rows:
                these = terms.get(r["id"], [])
                distinct = {t["term_id"] for t in these}
                if wanted and not wanted & distinct:
                    continue
                skip = (
                    (flag(params, "noTerm") and bool(distinct))
                    or (flag(params, "multipleTerm") and len(distinct) < 2)
                    or (flag(params, "notReviewedOnly") and r["id"] in done)
                )
                if skip:
                    continue
                result.append(self._user_json(r, these, show, r["id"] in done, listing=True))
            return result

    def bulk_insert_points(
        self, rows: Sequence[tuple[int, int, int, float, float, int]], *, project_id: int
    ) -> int:
        """Insert (image_id, user_id, term_id, x, y, created_ms) points directly (benchmarks)."""
        with self.lock:
            ids = self._ids(2 * len(rows))
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (ids[2 * i], project_id, img, uid, f"POINT ({x!r} {y!r})", t, t)
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
