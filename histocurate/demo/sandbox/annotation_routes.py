"""The sandbox's annotation routes: listing, create, edit, delete, terms, reviews."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from histocurate.demo.sandbox.store import flag

if TYPE_CHECKING:
    from collections.abc import Callable

    from histocurate.demo.sandbox.routes import Request


def _collection(items: list[dict[str, Any]], r: Request) -> dict[str, Any]:
    from histocurate.demo.sandbox.routes import collection

    return collection(items, r.params)


def _created(kind: str, obj: dict[str, Any], verb: str = "added") -> dict[str, Any]:
    from histocurate.demo.sandbox.routes import created

    return created(kind, obj, verb)


def list_annotations(r: Request) -> dict[str, Any]:
    return _collection(r.db.list_annotations(r.params, r.me), r)


def annotation(r: Request) -> dict[str, Any]:
    found = r.db.get_annotation(r.int("id"))
    r.db.check_member(found["project"], r.me)
    return found


def add_annotation(r: Request) -> Any:
    data = r.json()
    if isinstance(data, list):
        made = r.db.add_annotations(data, r.me)
        return {"data": [_created("annotation", a) for a in made], "status": 200}
    return _created("annotation", r.db.add_annotations([r.obj()], r.me)[0])


def update_annotation(r: Request) -> dict[str, Any]:
    return _created("annotation", r.db.update_annotation(r.int("id"), r.obj(), r.me), "edited")


def delete_annotation(r: Request) -> dict[str, Any]:
    return _created("annotation", r.db.delete_annotation(r.int("id"), r.me), "deleted")


def add_annotation_term(r: Request) -> dict[str, Any]:
    made = r.db.add_annotation_term(
        r.int("id"),
        r.int("term"),
        r.me,
        clear_before=bool(r.path.get("clear")),
        clear_for_all=flag(r.params, "clearForAll"),
    )
    return _created("annotationterm", made)


def delete_annotation_term(r: Request) -> dict[str, Any]:
    gone = r.db.delete_annotation_term(r.int("id"), r.int("term"), r.me)
    return _created("annotationterm", gone, "deleted")


def review(r: Request) -> dict[str, Any]:
    """``POST /api/annotation/{id}/review.json`` (``terms``: ids, default the annotation's)."""
    body = r.json() if r.body else None
    terms = body.get("terms") if isinstance(body, dict) else None
    if terms is None and r.params.get("terms"):
        terms = [int(t) for t in r.params["terms"].split(",") if t]
    return _created("reviewedannotation", r.db.review(r.int("id"), r.me, terms))


_ID = r"(?P<id>\d+)"
_TERM = r"term/(?P<term>\d+)"
_CLEAR = r"(?P<clear>/clearBefore)?"
ROUTES: list[tuple[str, str, Callable[[Request], Any]]] = [
    ("GET", r"/api/annotation\.json", list_annotations),
    ("POST", r"/api/annotation\.json", add_annotation),
    ("GET", rf"/api/annotation/{_ID}\.json", annotation),
    ("PUT", rf"/api/annotation/{_ID}\.json", update_annotation),
    ("DELETE", rf"/api/annotation/{_ID}\.json", delete_annotation),
    ("POST", rf"/api/annotation/{_ID}/{_TERM}{_CLEAR}\.json", add_annotation_term),
    ("DELETE", rf"/api/annotation/{_ID}/{_TERM}\.json", delete_annotation_term),
    ("POST", rf"/api/annotation/{_ID}/review\.json", review),
]
