"""Projects of the sandbox database: settings, members and managers."""

from __future__ import annotations

import sqlite3
from typing import Any

from histocurate.demo.sandbox.db import (
    PKG,
    SETTINGS,
    BadRequest,
    Conflict,
    CoreDB,
    Forbidden,
    _ms,
    now_ms,
)


class ProjectDB(CoreDB):
    """`CoreDB` plus projects (names unique server-wide) and their members."""

    def _project_json(self, r: sqlite3.Row) -> dict[str, Any]:
        onto = self._one("SELECT name FROM ontologies WHERE id = ?", (r["ontology_id"],))
        n_img = self._one("SELECT COUNT(*) FROM image_instances WHERE project_id=?", (r["id"],))
        n_ann = self._one("SELECT COUNT(*) FROM annotations WHERE project_id=?", (r["id"],))
        n_rev = self._one("SELECT COUNT(*) FROM reviewed WHERE project_id=?", (r["id"],))
        settings = {key: bool(r[col]) for key, col in SETTINGS.items()}
        mode = (
            "READ_ONLY" if r["is_read_only"] else "RESTRICTED" if r["is_restricted"] else "CLASSIC"
        )
        return {
            "class": f"{PKG}.project.Project",
            "id": r["id"],
            "name": r["name"],
            "ontology": r["ontology_id"],
            "ontologyName": onto[0] if onto else None,
            "discipline": None,
            "mode": mode,
            "numberOfImages": n_img[0] if n_img else 0,
            "numberOfAnnotations": n_ann[0] if n_ann else 0,
            "numberOfJobAnnotations": 0,
            "numberOfReviewedAnnotations": n_rev[0] if n_rev else 0,
            "isClosed": False,
            "areImagesDownloadable": False,
            **settings,
            "created": _ms(r["created"]),
            "updated": _ms(r["updated"]),
            "deleted": None,
        }

    def create_project(self, data: dict[str, Any], user_id: int) -> dict[str, Any]:
        name, ontology = data.get("name"), data.get("ontology")
        if not name:
            raise BadRequest("project needs a name")
        with self.lock:
            if self._one("SELECT id FROM projects WHERE name = ?", (name,)):
                raise Conflict(f"Project {name} already exist!")  # names are server-wide
            if ontology is not None:
                self._row("ontologies", int(ontology), "Ontology")
            pid = self._id()
            flags = [int(bool(data.get(key))) for key in SETTINGS]
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                (pid, name, ontology, user_id, now_ms(), *flags),
            )
            self.conn.execute("INSERT INTO project_users VALUES (?, ?, 1)", (pid, user_id))
            self.conn.execute("COMMIT")
            return self.get_project(pid)

    def update_project(self, pid: int, data: dict[str, Any], user: sqlite3.Row) -> dict[str, Any]:
        """``PUT /api/project/{id}.json``: a manager changes the name or the settings."""
        with self.lock:
            row = self._row("projects", pid, "Project")
            self.check_manager(pid, user)
            name = str(data.get("name") or row["name"])
            if name != row["name"] and self._one("SELECT id FROM projects WHERE name=?", (name,)):
                raise Conflict(f"Project {name} already exist!")
            flags = [int(bool(data.get(k, row[c]))) for k, c in SETTINGS.items()]
            sets = ", ".join(f"{c} = ?" for c in SETTINGS.values())
            self.conn.execute(
                f"UPDATE projects SET name = ?, {sets}, updated = ? WHERE id = ?",
                (name, *flags, now_ms(), pid),
            )
            return self.get_project(pid)

    def get_project(self, pid: int) -> dict[str, Any]:
        with self.lock:
            return self._project_json(self._row("projects", pid, "Project"))

    def project_row(self, pid: int) -> sqlite3.Row:
        with self.lock:
            return self._row("projects", pid, "Project")

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
            self._row("projects", pid, "Project")
            self._row("users", uid, "User")
            self.conn.execute(
                "INSERT OR IGNORE INTO project_users VALUES (?, ?, ?)", (pid, uid, int(admin))
            )
            if admin:
                self.conn.execute(
                    "UPDATE project_users SET admin = 1 WHERE project_id=? AND user_id=?",
                    (pid, uid),
                )

    def project_users(self, pid: int, *, managers: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            self._row("projects", pid, "Project")
            rows = self._all(
                "SELECT u.* FROM users u JOIN project_users p ON p.user_id = u.id "
                f"WHERE p.project_id = ? {'AND p.admin = 1' if managers else ''} ORDER BY u.id",
                (pid,),
            )
            return [self.user_json(r) for r in rows]

    def is_manager(self, pid: int, user: sqlite3.Row) -> bool:
        with self.lock:
            if user["admin"]:
                return True
            return bool(
                self._one(
                    "SELECT 1 FROM project_users WHERE project_id=? AND user_id=? AND admin=1",
                    (pid, user["id"]),
                )
            )

    def check_member(self, pid: int, user: sqlite3.Row) -> None:
        """Raise `Forbidden` unless ``user`` may work in project ``pid``."""
        with self.lock:
            if user["admin"]:
                return
            if not self._one(
                "SELECT 1 FROM project_users WHERE project_id=? AND user_id=?", (pid, user["id"])
            ):
                raise Forbidden(f"User {user['username']} is not a member of project {pid}")

    def check_manager(self, pid: int, user: sqlite3.Row) -> None:
        if not self.is_manager(pid, user):
            raise Forbidden(f"User {user['username']} is not a manager of project {pid}")
