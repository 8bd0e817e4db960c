"""SQLite storage of the sandbox Cytomine server, returning the JSON shapes of the real one.

One connection guarded by a lock (the HTTP server is threaded; SQLite serialises writes
anyway). Ids come from one global sequence, as on Cytomine (a term id never equals an
image id). Times are epoch milliseconds, sent as strings in the objects' JSON like the
real core does (the annotation listing sends numbers, see `store`; the repository
service's terms ISO dates, see `routes.terms`); ``updated`` stays null until an object is
edited. The database is versioned
(``PRAGMA user_version``): a file made by an older sandbox is refused with what to do.
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

from histocurate.errors import UserInputError

DB_VERSION = 2
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
  ontology_id INTEGER NOT NULL, color TEXT NOT NULL, created INTEGER, updated INTEGER);
CREATE TABLE IF NOT EXISTS projects (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
  ontology_id INTEGER, user_id INTEGER, created INTEGER, updated INTEGER,
  hide_users_layers INTEGER NOT NULL DEFAULT 0, hide_admins_layers INTEGER NOT NULL DEFAULT 0,
  is_restricted INTEGER NOT NULL DEFAULT 0, is_read_only INTEGER NOT NULL DEFAULT 0,
  blind_mode INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS project_users (project_id INTEGER, user_id INTEGER,
  admin INTEGER, PRIMARY KEY (project_id, user_id));
CREATE TABLE IF NOT EXISTS uploaded_files (id INTEGER PRIMARY KEY, filename TEXT,
  original_filename TEXT, size INTEGER, ext TEXT, content_type TEXT, storage_id INTEGER,
  user_id INTEGER, projects TEXT, status INTEGER NOT NULL, created INTEGER, updated INTEGER);
CREATE TABLE IF NOT EXISTS abstract_images (id INTEGER PRIMARY KEY, uploaded_file_id INTEGER,
  original_filename TEXT, width INTEGER, height INTEGER, mpp REAL, created INTEGER);
CREATE TABLE IF NOT EXISTS image_instances (id INTEGER PRIMARY KEY, base_image_id INTEGER,
  project_id INTEGER, user_id INTEGER, created INTEGER, updated INTEGER);
CREATE INDEX IF NOT EXISTS ii_project ON image_instances (project_id);
CREATE TABLE IF NOT EXISTS properties (id INTEGER PRIMARY KEY, domain_class TEXT,
  domain_ident INTEGER, key TEXT, value TEXT, created INTEGER, updated INTEGER);
CREATE INDEX IF NOT EXISTS pr_domain ON properties (domain_class, domain_ident);
CREATE TABLE IF NOT EXISTS annotations (id INTEGER PRIMARY KEY, project_id INTEGER,
  image_id INTEGER, user_id INTEGER, location TEXT NOT NULL, created INTEGER,
  updated INTEGER);
CREATE INDEX IF NOT EXISTS an_image ON annotations (project_id, image_id);
CREATE INDEX IF NOT EXISTS an_image_only ON annotations (image_id);
CREATE TABLE IF NOT EXISTS annotation_terms (id INTEGER PRIMARY KEY,
  annotation_id INTEGER NOT NULL, term_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
  created INTEGER, UNIQUE (annotation_id, term_id, user_id));
CREATE INDEX IF NOT EXISTS at_annotation ON annotation_terms (annotation_id);
CREATE TABLE IF NOT EXISTS reviewed (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL,
  project_id INTEGER, image_id INTEGER, user_id INTEGER, review_user_id INTEGER,
  location TEXT NOT NULL, terms TEXT NOT NULL, created INTEGER, updated INTEGER);
CREATE INDEX IF NOT EXISTS rv_image ON reviewed (image_id);
"""

PKG = "be.cytomine.domain"
IMAGE_CLASS = f"{PKG}.image.ImageInstance"
ABSTRACT_CLASS = f"{PKG}.image.AbstractImage"
PROJECT_CLASS = f"{PKG}.project.Project"
SETTINGS = {  # JSON key -> column
    "hideUsersLayers": "hide_users_layers",
    "hideAdminsLayers": "hide_admins_layers",
    "isRestricted": "is_restricted",
    "isReadOnly": "is_read_only",
    "blindMode": "blind_mode",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def _ms(value: int | None) -> str | None:
    return None if value is None else str(value)


class SandboxVersionError(UserInputError):
    """The database file was made by another version of the sandbox."""


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class Conflict(Exception):
    """The object already exists (HTTP 400 on the real server, AlreadyExist)."""


class BadRequest(Exception):
    """The request is malformed (HTTP 400)."""


class Forbidden(Exception):
    """The user may not do this (HTTP 403)."""


class CoreDB:
    """Users, storages, ontologies and terms. Every public method is atomic (one lock, one
    transaction); projects are in `projects.ProjectDB`, images in `images.ImageDB`,
    annotations in `store.SandboxDB`."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        tables = self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        if tables and version != DB_VERSION:
            self.conn.close()
            raise SandboxVersionError(
                f"{self.path} was made by an older histocurate sandbox (database version "
                f"{version}, this one is {DB_VERSION}): delete it (it holds only sandbox data)"
            )
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(_SCHEMA)
        self.conn.execute(f"PRAGMA user_version = {DB_VERSION}")
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

    def _row(self, table: str, ident: int, kind: str) -> sqlite3.Row:
        row = self._one(f"SELECT * FROM {table} WHERE id = ?", (ident,))
        if row is None:
            raise NotFound(f"{kind} {ident} not found")
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
            "class": f"{PKG}.security.User",
            "id": row["id"],
            "created": _ms(row["created"]),
            "updated": None,
            "deleted": None,
            "username": row["username"],
            "firstname": row["username"],
            "lastname": "",
            "email": f"{row['username']}@sandbox",
            "fullName": row["username"],
            "origin": "SYSTEM",
            "algo": False,
            "isDeveloper": False,
            "language": "EN",
            "admin": bool(row["admin"]),
            "user": True,
            "guest": False,
        }

    def get_user(self, ident: str, *, by_name: bool) -> dict[str, Any]:
        """``GET /api/user/{ident}.json``: an id, or (older servers only) a username."""
        with self.lock:
            if ident.isdigit():
                row = self._one("SELECT * FROM users WHERE id = ?", (int(ident),))
            elif by_name:
                row = self._one("SELECT * FROM users WHERE username = ?", (ident,))
            else:  # current servers take `long id`: a name is a type mismatch
                raise BadRequest(f"Failed to convert value of type 'String' to 'long': {ident}")
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

    def storages(self, owner_field: str = "userId") -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "class": f"{PKG}.image.server.Storage",
                    "id": r["id"],
                    "name": r["name"],
                    owner_field: r["user_id"],
                    "created": _ms(r["created"]),
                    "updated": None,
                }
                for r in self._all("SELECT * FROM storages ORDER BY id")
            ]

    def storage_owner(self, sid: int) -> int | None:
        with self.lock:
            row = self._one("SELECT user_id FROM storages WHERE id = ?", (sid,))
            return None if row is None else int(row[0])

    # -- ontologies and terms -----------------------------------------------------------------

    def _term_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.ontology.Term",
            "id": r["id"],
            "name": r["name"],
            "ontology": r["ontology_id"],
            "color": r["color"],
            "parent": None,
            "comment": None,
            "rate": None,
            "created": _ms(r["created"]),
            "updated": _ms(r["updated"]),
            "deleted": None,
        }

    def _ontology_json(self, r: sqlite3.Row) -> dict[str, Any]:
        terms = self._all("SELECT * FROM terms WHERE ontology_id = ? ORDER BY id", (r["id"],))
        projects = self._all("SELECT id, name FROM projects WHERE ontology_id = ?", (r["id"],))
        return {
            "class": f"{PKG}.ontology.Ontology",
            "id": r["id"],
            "name": r["name"],
            "user": r["user_id"],
            "title": r["name"],
            "isFolder": True,
            "created": _ms(r["created"]),
            "updated": _ms(r["updated"]),
            "deleted": None,
            "projects": [{"id": p["id"], "name": p["name"]} for p in projects],
            "children": [self._term_json(t) for t in terms],
        }

    def create_ontology(self, name: str, user_id: int) -> dict[str, Any]:
        with self.lock:
            oid = self._id()
            self.conn.execute(
                "INSERT INTO ontologies VALUES (?, ?, ?, ?, NULL)", (oid, name, user_id, now_ms())
            )
            return self._ontology_json(self._row("ontologies", oid, "Ontology"))

    def ontologies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._ontology_json(r) for r in self._all("SELECT * FROM ontologies")]

    def get_ontology(self, oid: int) -> dict[str, Any]:
        with self.lock:
            return self._ontology_json(self._row("ontologies", oid, "Ontology"))

    def create_term(self, data: dict[str, Any], *, allow_twice: bool = False) -> dict[str, Any]:
        """A term (``allow_twice``: even if the name exists, as an old server's data may)."""
        name, ontology, color = data.get("name"), data.get("ontology"), data.get("color")
        if not name or not color or not isinstance(ontology, int):
            raise BadRequest("term needs name, ontology and color")
        with self.lock:
            self._row("ontologies", ontology, "Ontology")
            if not allow_twice and self._one(
                "SELECT id FROM terms WHERE ontology_id=? AND name=?", (ontology, name)
            ):
                raise Conflict(f"Term {name} already exist in this ontology")
            tid = self._id()
            self.conn.execute(
                "INSERT INTO terms VALUES (?, ?, ?, ?, ?, NULL)",
                (tid, name, ontology, color, now_ms()),
            )
            return self._term_json(self._row("terms", tid, "Term"))

    def terms(
        self, *, ontology: int | None = None, project: int | None = None
    ) -> list[dict[str, Any]]:
        with self.lock:
            if project is not None:
                ontology = self._row("projects", project, "Project")["ontology_id"]
            if ontology is None:
                rows = self._all("SELECT * FROM terms ORDER BY id")
            else:
                rows = self._all("SELECT * FROM terms WHERE ontology_id=? ORDER BY id", (ontology,))
            return [self._term_json(r) for r in rows]
