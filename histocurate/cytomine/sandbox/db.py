"""SQLite storage of the sandbox Cytomine server, returning the JSON shapes of the real one.

One connection guarded by a lock (the HTTP server is threaded; SQLite serialises writes
anyway). Ids come from one global sequence, as on Cytomine (a term id never equals an
image id). Times are epoch milliseconds, sent as strings like the real server does;
``updated`` stays null until an object is edited.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seq (v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL,
  public_key TEXT UNIQUE NOT NULL, private_key TEXT NOT NULL, admin INTEGER NOT NULL,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS storages (id INTEGER PRIMARY KEY, name TEXT, user_id INTEGER,
  created INTEGER);
CREATE TABLE IF NOT EXISTS ontologies (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
  user_id INTEGER, created INTEGER, updated INTEGER);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
  ontology_id INTEGER NOT NULL, color TEXT NOT NULL, created INTEGER, updated INTEGER,
  UNIQUE (ontology_id, name));
CREATE TABLE IF NOT EXISTS projects (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
  ontology_id INTEGER, user_id INTEGER, created INTEGER, updated INTEGER);
CREATE TABLE IF NOT EXISTS project_users (project_id INTEGER, user_id INTEGER,
  admin INTEGER, PRIMARY KEY (project_id, user_id));
CREATE TABLE IF NOT EXISTS uploaded_files (id INTEGER PRIMARY KEY, filename TEXT,
  original_filename TEXT, size INTEGER, ext TEXT, content_type TEXT, storage_id INTEGER,
  user_id INTEGER, projects TEXT, created INTEGER);
CREATE TABLE IF NOT EXISTS abstract_images (id INTEGER PRIMARY KEY, uploaded_file_id INTEGER,
  original_filename TEXT, width INTEGER, height INTEGER, mpp REAL, created INTEGER);
CREATE TABLE IF NOT EXISTS image_instances (id INTEGER PRIMARY KEY, base_image_id INTEGER,
  project_id INTEGER, user_id INTEGER, created INTEGER, updated INTEGER);
CREATE INDEX IF NOT EXISTS ii_project ON image_instances (project_id);
CREATE TABLE IF NOT EXISTS properties (id INTEGER PRIMARY KEY, domain_class TEXT,
  domain_ident INTEGER, key TEXT, value TEXT, created INTEGER, updated INTEGER,
  UNIQUE (domain_class, domain_ident, key));
CREATE TABLE IF NOT EXISTS annotations (id INTEGER PRIMARY KEY, project_id INTEGER,
  image_id INTEGER, user_id INTEGER, location TEXT NOT NULL, created INTEGER,
  updated INTEGER);
CREATE INDEX IF NOT EXISTS an_image ON annotations (project_id, image_id);
CREATE INDEX IF NOT EXISTS an_image_only ON annotations (image_id);
CREATE TABLE IF NOT EXISTS annotation_terms (id INTEGER PRIMARY KEY,
  annotation_id INTEGER NOT NULL, term_id INTEGER NOT NULL, user_id INTEGER, created INTEGER,
  UNIQUE (annotation_id, term_id));
CREATE INDEX IF NOT EXISTS at_annotation ON annotation_terms (annotation_id);
"""

PKG = "be.cytomine.domain"
IMAGE_CLASS = f"{PKG}.image.ImageInstance"


def now_ms() -> int:
    return int(time.time() * 1000)


def _ms(value: int | None) -> str | None:
    return None if value is None else str(value)


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class Conflict(Exception):
    """The object already exists (HTTP 409)."""


class BadRequest(Exception):
    """The request is malformed (HTTP 400)."""


class Forbidden(Exception):
    """The user may not do this (HTTP 403)."""


class CoreDB:
    """Users, projects, ontologies, images, properties. Every public method is atomic
    (one lock, one transaction); annotations are in `store.SandboxDB`."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(
            "PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA foreign_keys=OFF"
        )
        self.conn.executescript(_SCHEMA)
        if self.path != ":memory:":
            Path(self.path).chmod(0o600)  # it holds every user's private key
        if self.conn.execute("SELECT COUNT(*) FROM seq").fetchone()[0] == 0:
            self.conn.execute("INSERT INTO seq (v) VALUES (1000)")

    # -- basics ---------------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def rollback(self) -> None:
        """Abandon a transaction left open by a failed request."""
        with self.lock:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _id(self) -> int:
        self.conn.execute("UPDATE seq SET v = v + 1")
        return int(self.conn.execute("SELECT v FROM seq").fetchone()[0])

    def _ids(self, n: int) -> range:
        self.conn.execute("UPDATE seq SET v = v + ?", (n,))
        last = int(self.conn.execute("SELECT v FROM seq").fetchone()[0])
        return range(last - n + 1, last + 1)

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, args).fetchone()
        return row

    def _row(self, table: str, ident: int) -> sqlite3.Row:
        row = self._one(f"SELECT * FROM {table} WHERE id = ?", (ident,))
        if row is None:
            raise NotFound(f"{table} {ident} not found")
        return row

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, args).fetchall())

    # -- users (admin only: the real server delegates accounts to an identity provider) ---

    def create_user(self, username: str, *, admin: bool = False) -> tuple[str, str]:
        """Create a user and its storage; return its (public, private) keys."""
        with self.lock:
            if self._one("SELECT id FROM users WHERE username = ?", (username,)):
                raise Conflict(f"user {username} already exists")
            public, private = str(uuid.uuid4()), secrets.token_hex(24)
            uid, sid, t = self._id(), self._id(), now_ms()
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                (uid, username, public, private, int(admin), t),
            )
            self.conn.execute(
                "INSERT INTO storages VALUES (?, ?, ?, ?)", (sid, f"{username} storage", uid, t)
            )
            self.conn.execute("COMMIT")
            return public, private

    def user_by_public_key(self, public_key: str) -> sqlite3.Row | None:
        with self.lock:
            return self._one("SELECT * FROM users WHERE public_key = ?", (public_key,))

    def user_json(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.security.User", "id": row["id"], "created": _ms(row["created"]),
            "updated": None, "deleted": None, "username": row["username"],
            "firstname": row["username"], "lastname": "", "email": f"{row['username']}@sandbox",
            "fullName": row["username"], "origin": "SYSTEM", "algo": False,
            "isDeveloper": False, "language": "EN", "admin": bool(row["admin"]),
            "user": True, "guest": False,
        }  # fmt: skip

    def get_user(self, ident: str) -> dict[str, Any]:
        with self.lock:
            col = "id" if ident.isdigit() else "username"
            row = self._one(f"SELECT * FROM users WHERE {col} = ?", (ident,))
            if row is None:
                raise NotFound(f"User {ident} not found")
            return self.user_json(row)

    def user_keys(self, usernames: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(public, private) keys of these users (admin only: for demos and tests)."""
        with self.lock:
            rows = self._all("SELECT username, public_key, private_key FROM users")
        wanted = set(usernames)
        return {
            r["username"]: (r["public_key"], r["private_key"])
            for r in rows
            if r["username"] in wanted
        }

    def list_users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.user_json(r) for r in self._all("SELECT * FROM users ORDER BY id")]

    def storages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"class": f"{PKG}.image.server.Storage", "id": r["id"], "name": r["name"],
                 "user": r["user_id"], "created": _ms(r["created"]), "updated": None}
                for r in self._all("SELECT * FROM storages ORDER BY id")
            ]  # fmt: skip

    # -- ontologies and terms -----------------------------------------------------------------

    def _term_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.ontology.Term", "id": r["id"], "name": r["name"],
            "ontology": r["ontology_id"], "color": r["color"], "parent": None,
            "comment": None, "rate": None, "created": _ms(r["created"]),
            "updated": _ms(r["updated"]), "deleted": None,
        }  # fmt: skip

    def _ontology_json(self, r: sqlite3.Row) -> dict[str, Any]:
        terms = self._all("SELECT * FROM terms WHERE ontology_id = ? ORDER BY id", (r["id"],))
        projects = self._all("SELECT id, name FROM projects WHERE ontology_id = ?", (r["id"],))
        return {
            "class": f"{PKG}.ontology.Ontology", "id": r["id"], "name": r["name"],
            "user": r["user_id"], "title": r["name"], "data": r["name"], "isFolder": True,
            "key": r["id"], "hideCheckbox": True, "attr": {"id": r["id"], "type": "ontology"},
            "state": {"opened": True}, "created": _ms(r["created"]),
            "updated": _ms(r["updated"]), "deleted": None,
            "projects": [{"id": p["id"], "name": p["name"]} for p in projects],
            "children": [self._term_json(t) for t in terms],
        }  # fmt: skip

    def create_ontology(self, name: str, user_id: int) -> dict[str, Any]:
        with self.lock:
            oid = self._id()
            self.conn.execute(
                "INSERT INTO ontologies VALUES (?, ?, ?, ?, NULL)", (oid, name, user_id, now_ms())
            )
            return self._ontology_json(self._one("SELECT * FROM ontologies WHERE id=?", (oid,)))  # type: ignore[arg-type]

    def ontologies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._ontology_json(r) for r in self._all("SELECT * FROM ontologies")]

    def get_ontology(self, oid: int) -> dict[str, Any]:
        with self.lock:
            row = self._one("SELECT * FROM ontologies WHERE id = ?", (oid,))
            if row is None:
                raise NotFound(f"Ontology {oid} not found")
            return self._ontology_json(row)

    def create_term(self, data: dict[str, Any]) -> dict[str, Any]:
        name, ontology, color = data.get("name"), data.get("ontology"), data.get("color")
        if not name or not color or not isinstance(ontology, int):
            raise BadRequest("term needs name, ontology and color")
        with self.lock:
            if self._one("SELECT id FROM ontologies WHERE id = ?", (ontology,)) is None:
                raise BadRequest(f"Ontology {ontology} not found")
            if self._one("SELECT id FROM terms WHERE ontology_id=? AND name=?", (ontology, name)):
                raise Conflict(f"Term {name} already exist in this ontology")
            tid = self._id()
            self.conn.execute(
                "INSERT INTO terms VALUES (?, ?, ?, ?, ?, NULL)",
                (tid, name, ontology, color, now_ms()),
            )
            return self._term_json(self._one("SELECT * FROM terms WHERE id = ?", (tid,)))  # type: ignore[arg-type]

    def terms(
        self, *, ontology: int | None = None, project: int | None = None
    ) -> list[dict[str, Any]]:
        with self.lock:
            if project is not None:
                row = self._one("SELECT ontology_id FROM projects WHERE id = ?", (project,))
                if row is None:
                    raise NotFound(f"Project {project} not found")
                ontology = row[0]
            if ontology is None:
                rows = self._all("SELECT * FROM terms ORDER BY id")
            else:
                rows = self._all("SELECT * FROM terms WHERE ontology_id=? ORDER BY id", (ontology,))
            return [self._term_json(r) for r in rows]

    # -- projects ---------------------------------------------------------------------------

    def _project_json(self, r: sqlite3.Row) -> dict[str, Any]:
        onto = self._one("SELECT name FROM ontologies WHERE id = ?", (r["ontology_id"],))
        n_img = self._one("SELECT COUNT(*) FROM image_instances WHERE project_id=?", (r["id"],))
        n_ann = self._one("SELECT COUNT(*) FROM annotations WHERE project_id=?", (r["id"],))
        return {
            "class": f"{PKG}.project.Project", "id": r["id"], "name": r["name"],
            "ontology": r["ontology_id"], "ontologyName": onto[0] if onto else None,
            "discipline": None, "blindMode": False, "mode": "CLASSIC",
            "numberOfSlides": n_img[0] if n_img else 0, "numberOfImages": n_img[0] if n_img else 0,
            "numberOfAnnotations": n_ann[0] if n_ann else 0, "numberOfJobAnnotations": 0,
            "numberOfReviewedAnnotations": 0, "isClosed": False, "isReadOnly": False,
            "hideUsersLayers": False, "hideAdminsLayers": False, "created": _ms(r["created"]),
            "updated": _ms(r["updated"]), "deleted": None,
        }  # fmt: skip

    def create_project(self, data: dict[str, Any], user_id: int) -> dict[str, Any]:
        name, ontology = data.get("name"), data.get("ontology")
        if not name:
            raise BadRequest("project needs a name")
        with self.lock:
            if self._one("SELECT id FROM projects WHERE name = ?", (name,)):
                raise Conflict(f"Project {name} already exist!")
            if ontology is not None and not self._one(
                "SELECT id FROM ontologies WHERE id = ?", (ontology,)
            ):
                raise BadRequest(f"Ontology {ontology} not found")
            pid = self._id()
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, ?, NULL)",
                (pid, name, ontology, user_id, now_ms()),
            )
            self.conn.execute("INSERT INTO project_users VALUES (?, ?, 1)", (pid, user_id))
            self.conn.execute("COMMIT")
            return self.get_project(pid)

    def get_project(self, pid: int) -> dict[str, Any]:
        with self.lock:
            row = self._one("SELECT * FROM projects WHERE id = ?", (pid,))
            if row is None:
                raise NotFound(f"Project {pid} not found")
            return self._project_json(row)

    def projects(self, member: int | None = None) -> list[dict[str, Any]]:
        with self.lock:
            if member is None:
                rows = self._all("SELECT * FROM projects ORDER BY id")
            else:
                rows = self._all(
                    "SELECT p.* FROM projects p JOIN project_users u ON u.project_id = p.id "
                    "WHERE u.user_id = ? ORDER BY p.id",
                    (member,),
                )
            return [self._project_json(r) for r in rows]

    def add_project_user(self, pid: int, uid: int, *, admin: bool = False) -> None:
        with self.lock:
            self.get_project(pid)
            if self._one("SELECT id FROM users WHERE id = ?", (uid,)) is None:
                raise NotFound(f"User {uid} not found")
            self.conn.execute(
                "INSERT OR IGNORE INTO project_users VALUES (?, ?, ?)", (pid, uid, int(admin))
            )

    def project_users(self, pid: int) -> list[dict[str, Any]]:
        with self.lock:
            self.get_project(pid)
            rows = self._all(
                "SELECT u.* FROM users u JOIN project_users p ON p.user_id = u.id "
                "WHERE p.project_id = ? ORDER BY u.id",
                (pid,),
            )
            return [self.user_json(r) for r in rows]

    def check_member(self, pid: int, user: sqlite3.Row) -> None:
        """Raise `Forbidden` unless ``user`` may work in project ``pid``."""
        with self.lock:
            if user["admin"]:
                return
            if not self._one(
                "SELECT 1 FROM project_users WHERE project_id=? AND user_id=?", (pid, user["id"])
            ):
                raise Forbidden(f"User {user['username']} is not a member of project {pid}")
