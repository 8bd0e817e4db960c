"""The sandbox's REST routes: path pattern -> handler returning the real server's JSON."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from histocurate.cytomine.sandbox.db import IMAGE_CLASS, BadRequest, Forbidden
from histocurate.cytomine.sandbox.store import SandboxDB


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
    """Cytomine's collection envelope, with its ``max`` / ``offset`` paging (max=0: all)."""
    try:
        size, offset, per_page = len(items), int(params.get("offset", 0)), int(params.get("max", 0))
    except ValueError:
        raise BadRequest("max and offset must be integers") from None
    page = items[offset : offset + per_page] if per_page else items[offset:]
    pages = -(-size // per_page) if per_page else 1
    return {"collection": page, "offset": offset, "perPage": per_page or size,
            "size": size, "totalPages": pages}  # fmt: skip


def created(kind: str, obj: dict[str, Any], verb: str = "added") -> dict[str, Any]:
    name = obj.get("name") or obj.get("key") or obj.get("id")
    return {
        "message": f"{kind.capitalize()} {name} {verb}", "printMessage": True,
        "callback": {"method": f"be.cytomine.Add{kind.capitalize()}Command",
                     f"{kind}ID": obj.get("id")},
        kind: obj,
    }  # fmt: skip


# -- handlers ---------------------------------------------------------------------------------


def ping(r: Request) -> dict[str, Any]:
    return {"alive": True, "authenticated": False, "version": "sandbox", "serverURL": ""}


def current_user(r: Request) -> dict[str, Any]:
    return r.db.user_json(r.me)


def users(r: Request) -> dict[str, Any]:
    return collection(r.db.list_users(), r.params)


def user(r: Request) -> dict[str, Any]:
    return r.db.get_user(r.path["ident"])


def storages(r: Request) -> dict[str, Any]:
    mine = [s for s in r.db.storages() if s["user"] == r.me["id"] or r.me["admin"]]
    return collection(mine, r.params)


def ontologies(r: Request) -> dict[str, Any]:
    return collection(r.db.ontologies(), r.params)


def ontology(r: Request) -> dict[str, Any]:
    return r.db.get_ontology(r.int("id"))


def add_ontology(r: Request) -> dict[str, Any]:
    name = r.obj().get("name")
    if not name:
        raise BadRequest("ontology needs a name")
    return created("ontology", r.db.create_ontology(str(name), r.me["id"]))


def terms(r: Request) -> dict[str, Any]:
    onto = r.path.get("ontology")
    proj = r.path.get("project")
    found = r.db.terms(ontology=int(onto) if onto else None, project=int(proj) if proj else None)
    return collection(found, r.params)


def add_term(r: Request) -> Any:
    data = r.json()
    if isinstance(data, list):
        return {"data": [created("term", r.db.create_term(d)) for d in data], "status": 200}
    return created("term", r.db.create_term(r.obj()))


def projects(r: Request) -> dict[str, Any]:
    """Projects the user may see: all for an admin, else those they are a member of."""
    return collection(r.db.projects(None if r.me["admin"] else r.me["id"]), r.params)


def project(r: Request) -> dict[str, Any]:
    return r.db.get_project(r.int("id"))


def add_project(r: Request) -> dict[str, Any]:
    return created("project", r.db.create_project(r.obj(), r.me["id"]))


def project_users(r: Request) -> dict[str, Any]:
    return collection(r.db.project_users(r.int("id")), r.params)


def add_project_user(r: Request) -> dict[str, Any]:
    pid, uid = r.int("id"), r.int("user")
    r.db.check_member(pid, r.me)
    r.db.add_project_user(pid, uid, admin=bool(r.path.get("admin")))
    return {"data": {"message": f"User {uid} added to project {pid}"}, "status": 200}


def project_images(r: Request) -> dict[str, Any]:
    r.db.check_member(r.int("id"), r.me)
    return collection(r.db.project_images(r.int("id")), r.params)


def image(r: Request) -> dict[str, Any]:
    return r.db.get_image(r.int("id"))


def upload(r: Request) -> list[dict[str, Any]]:
    """``POST /upload``: multipart ``files[]``; images are converted synchronously here."""
    from PIL import Image, UnidentifiedImageError

    ctype = r.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise BadRequest("upload needs multipart/form-data")
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + r.body
    )
    files = [
        p
        for p in message.iter_parts()
        if p.get_param("name", header="content-disposition") == "files[]"
    ]
    if len(files) != 1:
        raise BadRequest("upload needs exactly one files[] part")
    part = files[0]
    filename = str(part.get_filename() or "upload")
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            width, height = img.size
            dpi = img.info.get("dpi")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise BadRequest(f"{filename}: format not supported or file damaged") from None
    mpp = round(25400.0 / float(dpi[0]), 9) if dpi and dpi[0] else None
    storage = r.params.get("storage") or r.params.get("idStorage")
    project_ids = r.params.get("projects") or r.params.get("idProject") or ""
    try:
        pids = [int(p) for p in project_ids.split(",") if p]
        storage_id = int(storage or 0)
    except ValueError:
        raise BadRequest("storage and projects must be ids") from None
    for pid in pids:
        r.db.check_member(pid, r.me)
    owner = [s for s in r.db.storages() if s["id"] == storage_id]
    if owner and owner[0]["user"] != r.me["id"] and not r.me["admin"]:
        raise Forbidden(f"storage {storage_id} is not yours")
    result = r.db.add_upload(
        filename=filename, size=len(data), width=width, height=height, mpp=mpp,
        storage_id=storage_id, user_id=r.me["id"], projects=pids,
    )  # fmt: skip
    keys, values = r.params.get("keys"), r.params.get("values")
    if keys and values:
        for instance in result["images"][0]["imageInstances"]:
            for key, value in zip(keys.split(","), values.split(","), strict=False):
                r.db.set_property(IMAGE_CLASS, instance["id"], {"key": key, "value": value})
    return [result]


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


def list_annotations(r: Request) -> dict[str, Any]:
    return collection(r.db.list_annotations(r.params, r.me), r.params)


def annotation(r: Request) -> dict[str, Any]:
    found = r.db.get_annotation(r.int("id"))
    r.db.check_member(found["project"], r.me)
    return found


def add_annotation(r: Request) -> Any:
    data = r.json()
    if isinstance(data, list):
        made = r.db.add_annotations(data, r.me)
        return {"data": [created("annotation", a) for a in made], "status": 200}
    return created("annotation", r.db.add_annotations([r.obj()], r.me)[0])


def update_annotation(r: Request) -> dict[str, Any]:
    return created("annotation", r.db.update_annotation(r.int("id"), r.obj(), r.me), "edited")


def delete_annotation(r: Request) -> dict[str, Any]:
    return created("annotation", r.db.delete_annotation(r.int("id"), r.me), "deleted")


def add_annotation_term(r: Request) -> dict[str, Any]:
    clear = bool(r.path.get("clear"))
    made = r.db.add_annotation_term(r.int("id"), r.int("term"), r.me, clear_before=clear)
    return created("annotationterm", made)


def delete_annotation_term(r: Request) -> dict[str, Any]:
    gone = r.db.delete_annotation_term(r.int("id"), r.int("term"), r.me)
    return created("annotationterm", gone, "deleted")


_ID = r"(?P<id>\d+)"
_TERM = r"term/(?P<term>\d+)"
_CLEAR = r"(?P<clear>/clearBefore)?"
_DOMAIN = r"/api/domain/(?P<cls>[\w.]+)/(?P<ident>\d+)"
Handler = Callable[[Request], Any]
_TABLE: list[tuple[str, str, Handler]] = [
    ("GET", r"/server/ping(\.json)?", ping),
    ("POST", r"/server/ping(\.json)?", ping),
    ("GET", r"/api/user/current\.json", current_user),
    ("GET", r"/api/user\.json", users),
    ("GET", r"/api/user/(?P<ident>[\w.@-]+)\.json", user),
    ("GET", r"/api/storage\.json", storages),
    ("GET", r"/api/ontology\.json", ontologies),
    ("POST", r"/api/ontology\.json", add_ontology),
    ("GET", rf"/api/ontology/{_ID}\.json", ontology),
    ("GET", r"/api/ontology/(?P<ontology>\d+)/term\.json", terms),
    ("GET", r"/api/term\.json", terms),
    ("POST", r"/api/term\.json", add_term),
    ("GET", r"/api/project\.json", projects),
    ("POST", r"/api/project\.json", add_project),
    ("GET", rf"/api/project/{_ID}\.json", project),
    ("GET", r"/api/project/(?P<project>\d+)/term\.json", terms),
    ("GET", rf"/api/project/{_ID}/user\.json", project_users),
    ("POST", rf"/api/project/{_ID}/user/(?P<user>\d+)(?P<admin>/admin)?\.json",
     add_project_user),
    ("GET", rf"/api/project/{_ID}/imageinstance\.json", project_images),
    ("GET", rf"/api/imageinstance/{_ID}\.json", image),
    ("POST", r"/upload", upload),
    ("GET", rf"{_DOMAIN}/property\.json", properties),
    ("GET", rf"{_DOMAIN}/key/(?P<key>[^/]+)/property\.json", properties),
    ("POST", rf"{_DOMAIN}/property\.json", add_property),
    ("PUT", rf"{_DOMAIN}/property/{_ID}\.json", update_property),
    ("GET", r"/api/annotation\.json", list_annotations),
    ("POST", r"/api/annotation\.json", add_annotation),
    ("GET", rf"/api/annotation/{_ID}\.json", annotation),
    ("PUT", rf"/api/annotation/{_ID}\.json", update_annotation),
    ("DELETE", rf"/api/annotation/{_ID}\.json", delete_annotation),
    ("POST", rf"/api/annotation/{_ID}/{_TERM}{_CLEAR}\.json", add_annotation_term),
    ("DELETE", rf"/api/annotation/{_ID}/{_TERM}\.json", delete_annotation_term),
]  # fmt: skip
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (verb, re.compile(f"^{pattern}$"), handler) for verb, pattern, handler in _TABLE
]
