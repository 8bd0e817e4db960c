"""The sandbox's REST routes: path pattern -> handler returning the real server's JSON.

Routes that differ between server builds read ``r.profile`` (`versions.ServerProfile`).
Annotation routes are in `annotation_routes`, PIMS's upload in `pims`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import TYPE_CHECKING, Any

from histocurate.demo.sandbox import annotation_routes, pims
from histocurate.demo.sandbox.db import BadRequest
from histocurate.demo.sandbox.store import SandboxDB
from histocurate.demo.sandbox.versions import ServerProfile

if TYPE_CHECKING:
    from histocurate.demo.sandbox.server import SandboxHTTPServer


class Unauthorized(Exception):
    """Missing or wrong credentials (HTTP 401)."""


@dataclass
class Request:
    db: SandboxDB
    user: sqlite3.Row | None
    params: dict[str, str]
    body: bytes
    path: dict[str, str]
    headers: Message
    server: SandboxHTTPServer

    @property
    def profile(self) -> ServerProfile:
        return self.server.profile

    @property
    def me(self) -> sqlite3.Row:
        assert self.user is not None
        return self.user

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except json.JSONDecodeError:
            raise BadRequest("request body is not JSON") from None

    def obj(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        return data

    def int(self, name: str) -> int:
        return int(self.path[name])


def collection(items: list[dict[str, Any]], params: dict[str, str]) -> dict[str, Any]:
    """The core's collection envelope, with its ``max`` / ``offset`` paging (max=0: all)."""
    try:
        size, offset, per_page = len(items), int(params.get("offset", 0)), int(params.get("max", 0))
    except ValueError:
        raise BadRequest("max and offset must be integers") from None
    page = items[offset : offset + per_page] if per_page else items[offset:]
    pages = -(-size // per_page) if per_page else 1
    return {
        "collection": page,
        "offset": offset,
        "perPage": per_page or size,
        "size": size,
        "totalPages": pages,
    }


def repository_page(r: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list of the repository service: Spring's ``page``/``size`` (20 by default), whatever
    ``max`` says; older builds served these lists from the core (all at once)."""
    if not r.profile.pages_repository_lists:
        return collection(items, r.params)
    try:
        page = int(r.params.get("page", 0))
        per_page = int(r.params.get("size", r.profile.page_size))
    except ValueError:
        raise BadRequest("page and size must be integers") from None
    per_page = max(1, per_page)
    chunk = items[page * per_page : (page + 1) * per_page]
    return {
        "collection": chunk,
        "offset": page * per_page,
        "perPage": per_page,
        "size": len(items),
        "totalPages": -(-len(items) // per_page),
    }


def created(kind: str, obj: dict[str, Any], verb: str = "added") -> dict[str, Any]:
    name = obj.get("name") or obj.get("key") or obj.get("id")
    return {
        "message": f"{kind.capitalize()} {name} {verb}",
        "printMessage": True,
        "callback": {
            "method": f"be.cytomine.Add{kind.capitalize()}Command",
            f"{kind}ID": obj.get("id"),
        },
        kind: obj,
    }


# -- handlers ---------------------------------------------------------------------------------


def ping(r: Request) -> dict[str, Any]:
    return {
        "alive": True,
        "version": r.profile.version,
        "serverURL": r.server.host,
        "serverID": "sandbox",
    }


def current_user(r: Request) -> dict[str, Any]:
    return r.db.user_json(r.me)


def users(r: Request) -> dict[str, Any]:
    return collection(r.db.list_users(), r.params)


def user(r: Request) -> dict[str, Any]:
    return r.db.get_user(r.path["ident"], by_name=r.profile.user_by_name)


def storages(r: Request) -> dict[str, Any]:
    field = r.profile.storage_owner_field
    mine = [s for s in r.db.storages(field) if s[field] == r.me["id"] or r.me["admin"]]
    return repository_page(r, mine)


def ontologies(r: Request) -> dict[str, Any]:
    return repository_page(r, r.db.ontologies())


def ontology(r: Request) -> dict[str, Any]:
    return r.db.get_ontology(r.int("id"))


def add_ontology(r: Request) -> dict[str, Any]:
    name = r.obj().get("name")
    if not name:
        raise BadRequest("ontology needs a name")
    made = r.db.create_ontology(str(name), r.me["id"])
    return {"printMessage": True, "data": made, "commandId": None, "command": None}


def _iso(ms: Any) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).replace(tzinfo=None).isoformat()


def repository_term(term: dict[str, Any]) -> dict[str, Any]:
    """A term as the repository service answers it (``TermResponse``: ``ontologyId``, not
    ``ontology``; dates as ISO ``LocalDateTime``; no ``class``)."""
    return {
        "id": term["id"],
        "name": term["name"],
        "color": term["color"],
        "ontologyId": term["ontology"],
        "created": _iso(term.get("created")),
        "updated": _iso(term.get("updated")),
        "deleted": None,
        "comment": term.get("comment"),
        "children": [],
    }


def terms(r: Request) -> dict[str, Any]:
    """An ontology's (or a project's) terms: the core's term JSON on older builds, the
    repository service's ``TermResponse`` on those whose lists it serves."""
    onto, proj = r.path.get("ontology"), r.path.get("project")
    found = r.db.terms(ontology=int(onto) if onto else None, project=int(proj) if proj else None)
    if r.profile.pages_repository_lists:
        found = [repository_term(t) for t in found]
    return repository_page(r, found)


def add_term(r: Request) -> Any:
    return created("term", r.db.create_term(r.obj()))


def projects(r: Request) -> dict[str, Any]:
    """Projects the user may see: all for an admin, else those they are a member of."""
    return collection(r.db.projects(None if r.me["admin"] else r.me["id"]), r.params)


def project(r: Request) -> dict[str, Any]:
    r.db.check_member(r.int("id"), r.me)
    return r.db.get_project(r.int("id"))


def add_project(r: Request) -> dict[str, Any]:
    return created("project", r.db.create_project(r.obj(), r.me["id"]))


def update_project(r: Request) -> dict[str, Any]:
    return created("project", r.db.update_project(r.int("id"), r.obj(), r.me), "edited")


def project_users(r: Request) -> dict[str, Any]:
    r.db.check_member(r.int("id"), r.me)
    return collection(r.db.project_users(r.int("id")), r.params)


def project_admins(r: Request) -> dict[str, Any]:
    r.db.check_member(r.int("id"), r.me)
    return collection(r.db.project_users(r.int("id"), managers=True), r.params)


def user_layers(r: Request) -> dict[str, Any]:
    """Whose annotation layers the caller may show in the viewer (the project's settings)."""
    pid = r.int("id")
    r.db.check_member(pid, r.me)
    row = r.db.project_row(pid)
    members = r.db.project_users(pid)
    if r.db.is_manager(pid, r.me):
        return collection(members, r.params)
    managers = {u["id"] for u in r.db.project_users(pid, managers=True)}
    shown = [
        u
        for u in members
        if u["id"] == r.me["id"]
        or (u["id"] in managers and not row["hide_admins_layers"])
        or (u["id"] not in managers and not row["hide_users_layers"])
    ]
    return collection(shown, r.params)


def add_project_user(r: Request) -> dict[str, Any]:
    pid, uid = r.int("id"), r.int("user")
    r.db.check_manager(pid, r.me)
    r.db.add_project_user(pid, uid, admin=bool(r.path.get("admin")))
    return {"data": {"message": f"User {uid} added to project {pid}"}, "status": 200}


def project_images(r: Request) -> dict[str, Any]:
    r.db.check_member(r.int("id"), r.me)
    return collection(r.db.project_images(r.int("id")), r.params)


def image(r: Request) -> dict[str, Any]:
    found = r.db.get_image(r.int("id"))
    r.db.check_member(found["project"], r.me)
    return found


def add_image(r: Request) -> dict[str, Any]:
    data = r.obj()
    base, pid = data.get("baseImage"), data.get("project")
    if not isinstance(base, int) or not isinstance(pid, int):
        raise BadRequest("image instance needs baseImage and project ids")
    return created("imageinstance", r.db.add_instance(base, pid, r.me))


def uploaded_files(r: Request) -> dict[str, Any]:
    return repository_page(r, r.db.uploaded_files(r.me))


def uploaded_file(r: Request) -> dict[str, Any]:
    return r.db.uploaded_file(r.int("id"))


def abstract_of_upload(r: Request) -> dict[str, Any]:
    return r.db.abstract_of_upload(r.int("id"))


def properties(r: Request) -> dict[str, Any]:
    found = r.db.properties(r.path["cls"], r.int("ident"))
    key = r.path.get("key")
    if key is not None:
        match = [p for p in found if p["key"] == key]
        if not match:
            raise BadRequest(f"no property {key}")
        return match[0]
    return collection(found, r.params)


def add_property(r: Request) -> dict[str, Any]:
    return created("property", r.db.set_property(r.path["cls"], r.int("ident"), r.obj()))


def update_property(r: Request) -> dict[str, Any]:
    prop = r.db.set_property(r.path["cls"], r.int("ident"), r.obj(), pid=r.int("id"))
    return created("property", prop, "edited")


_ID = r"(?P<id>\d+)"
_DOMAIN = r"/api/domain/(?P<cls>[\w.]+)/(?P<ident>\d+)"
Handler = Callable[[Request], Any]
_TABLE: list[tuple[str, str, Handler]] = [
    ("GET", r"/server/ping(\.json)?", ping),
    ("GET", r"/api/user/current\.json", current_user),
    ("GET", r"/api/user\.json", users),
    ("GET", r"/api/user/(?P<ident>[\w.@-]+)\.json", user),
    ("GET", r"/api/storage\.json", storages),
    ("GET", r"/api/ontology\.json", ontologies),
    ("POST", r"/api/ontology\.json", add_ontology),
    ("GET", rf"/api/ontology/{_ID}\.json", ontology),
    ("GET", r"/api/ontology/(?P<ontology>\d+)/term\.json", terms),
    ("POST", r"/api/term\.json", add_term),
    ("GET", r"/api/project\.json", projects),
    ("POST", r"/api/project\.json", add_project),
    ("GET", rf"/api/project/{_ID}\.json", project),
    ("PUT", rf"/api/project/{_ID}\.json", update_project),
    ("GET", r"/api/project/(?P<project>\d+)/term\.json", terms),
    ("GET", rf"/api/project/{_ID}/user\.json", project_users),
    ("GET", rf"/api/project/{_ID}/admin\.json", project_admins),
    ("GET", rf"/api/project/{_ID}/userlayer\.json", user_layers),
    ("POST", rf"/api/project/{_ID}/user/(?P<user>\d+)(?P<admin>/admin)?\.json", add_project_user),
    ("GET", rf"/api/project/{_ID}/imageinstance\.json", project_images),
    ("GET", rf"/api/imageinstance/{_ID}\.json", image),
    ("POST", r"/api/imageinstance\.json", add_image),
    ("GET", r"/api/uploadedfile\.json", uploaded_files),
    ("GET", rf"/api/uploadedfile/{_ID}\.json", uploaded_file),
    ("GET", rf"/api/uploadedfile/{_ID}/abstractimage\.json", abstract_of_upload),
    ("GET", rf"{_DOMAIN}/property\.json", properties),
    ("GET", rf"{_DOMAIN}/key/(?P<key>[^/]+)/property\.json", properties),
    ("POST", rf"{_DOMAIN}/property\.json", add_property),
    ("PUT", rf"{_DOMAIN}/property/{_ID}\.json", update_property),
    *annotation_routes.ROUTES,
]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (verb, re.compile(f"^{pattern}$"), handler) for verb, pattern, handler in _TABLE
]
PIMS_HANDLER = pims.upload


def pims_upload(r: Request) -> Any:
    """An upload route: the server's ``upload_handler`` (PIMS's `pims.upload`; a test may
    put another there), looked up at each request."""
    return r.server.upload_handler(r)


def pims_routes(profile: ServerProfile) -> list[tuple[str, re.Pattern[str], Handler]]:
    """The upload routes of a profile (answered as PIMS answers: errors as a JSON list)."""
    return [
        ("POST", re.compile(f"^{re.escape(route)}$"), pims_upload)
        for route in profile.upload_routes
    ]
