"""Images of the sandbox database: uploaded files and their import status, abstract images,
image instances (blinded in blind mode), and key/value properties of any object."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from histocurate.demo.sandbox.db import (
    IMAGE_CLASS,
    PKG,
    BadRequest,
    Conflict,
    NotFound,
    _ms,
    now_ms,
)
from histocurate.demo.sandbox.projects import ProjectDB

# PIMS's uploaded-file statuses (pims/importer/listeners.py): a code per import stage,
# the stage's error is its code + 1, an unexpected error is 41 (ERROR_DEPLOYMENT).
UPLOADED, DETECTING_FORMAT, DEPLOYED = 0, 10, 100
ERROR_FORMAT, ERROR_UNEXPECTED, ERROR_UNPACKING, ERROR_INTEGRITY = 11, 41, 51, 61
STATUS_TEXT = {
    UPLOADED: "UPLOADED",
    DETECTING_FORMAT: "DETECTING_FORMAT",
    ERROR_FORMAT: "ERROR_FORMAT",
    20: "EXTRACTING_DATA",
    21: "ERROR_EXTRACTION",
    30: "CONVERTING",
    31: "ERROR_CONVERSION",
    40: "DEPLOYING",
    ERROR_UNEXPECTED: "ERROR_DEPLOYMENT",
    50: "UNPACKING",
    ERROR_UNPACKING: "ERROR_UNPACKING",
    60: "CHECKING_INTEGRITY",
    ERROR_INTEGRITY: "ERROR_INTEGRITY",
    DEPLOYED: "DEPLOYED",
}


class ImageDB(ProjectDB):
    """`ProjectDB` plus uploaded images and properties."""

    # -- uploads (PIMS) -----------------------------------------------------------------------

    def start_upload(
        self, *, filename: str, size: int, storage_id: int, user_id: int, projects: Iterable[int]
    ) -> dict[str, Any]:
        """The uploaded file of a new upload (status UPLOADED: not imported yet)."""
        projects = list(projects)
        with self.lock:
            for pid in projects:
                self._row("projects", pid, "Project")
            self._row("storages", storage_id, "Storage")
            uf, t = self._id(), now_ms()
            ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
            self.conn.execute(
                "INSERT INTO uploaded_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    uf,
                    f"{uf}/{filename}",
                    filename,
                    size,
                    ext,
                    f"image/{ext}",
                    storage_id,
                    user_id,
                    ",".join(map(str, projects)),
                    UPLOADED,
                    t,
                ),
            )
            return self.uploaded_file(uf)

    def finish_upload(
        self, uf: int, *, width: int, height: int, mpp: float | None, properties: dict[str, str]
    ) -> dict[str, Any]:
        """End of a successful import, in PIMS's order: the abstract image (with the upload's
        properties), the file DEPLOYED, and only then one instance per project."""
        with self.lock:
            row = self._row("uploaded_files", uf, "UploadedFile")
            ai, t = self._id(), now_ms()
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO abstract_images VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ai, uf, row["original_filename"], width, height, mpp, t),
            )
            for key, value in properties.items():
                self.conn.execute(
                    "INSERT INTO properties VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (self._id(), f"{PKG}.image.AbstractImage", ai, key, value, t),
                )
            self.conn.execute(
                "UPDATE uploaded_files SET status = ?, updated = ? WHERE id = ?", (DEPLOYED, t, uf)
            )
            instances = [
                self._new_instance(ai, int(pid), row["user_id"], t)
                for pid in row["projects"].split(",")
                if pid
            ]
            self.conn.execute("COMMIT")
            abstract = self._abstract_json(self._row("abstract_images", ai, "AbstractImage"))
            return {"image": abstract, "imageInstances": [self.get_image(i) for i in instances]}

    def set_upload_status(self, uf: int, status: int) -> None:
        """Move an uploaded file to ``status`` (an import stage, or an error)."""
        with self.lock:
            self.conn.execute(
                "UPDATE uploaded_files SET status = ?, updated = ? WHERE id = ?",
                (status, now_ms(), uf),
            )

    def fail_upload(self, uf: int, status: int = ERROR_FORMAT) -> None:
        self.set_upload_status(uf, status)

    def add_upload(
        self,
        *,
        filename: str,
        size: int,
        width: int,
        height: int,
        mpp: float | None,
        storage_id: int,
        user_id: int,
        projects: Iterable[int],
        properties: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A finished import in one step (benchmarks and tests fill databases with it)."""
        uploaded = self.start_upload(
            filename=filename, size=size, storage_id=storage_id, user_id=user_id, projects=projects
        )
        images = self.finish_upload(
            uploaded["id"], width=width, height=height, mpp=mpp, properties=properties or {}
        )
        return {"uploadedFile": self.uploaded_file(uploaded["id"]), "images": [images]}

    def _uploaded_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.image.UploadedFile",
            "id": r["id"],
            "filename": r["filename"],
            "originalFilename": r["original_filename"],
            "size": r["size"],
            "ext": r["ext"],
            "contentType": r["content_type"],
            "storage": r["storage_id"],
            "user": r["user_id"],
            "projects": [int(p) for p in r["projects"].split(",") if p],
            "status": r["status"],
            "statusText": STATUS_TEXT.get(r["status"], "ERROR"),
            "parent": None,
            "created": _ms(r["created"]),
            "updated": _ms(r["updated"]),
            "deleted": None,
        }

    def uploaded_file(self, uf: int) -> dict[str, Any]:
        with self.lock:
            return self._uploaded_json(self._row("uploaded_files", uf, "UploadedFile"))

    def uploaded_files(self, user: sqlite3.Row) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._all("SELECT * FROM uploaded_files ORDER BY id")
            return [
                self._uploaded_json(r) for r in rows if user["admin"] or r["user_id"] == user["id"]
            ]

    def abstract_of_upload(self, uf: int) -> dict[str, Any]:
        with self.lock:
            row = self._one("SELECT * FROM abstract_images WHERE uploaded_file_id = ?", (uf,))
            if row is None:
                raise NotFound(f"AbstractImage of uploaded file {uf} not found")
            return self._abstract_json(row)

    def _abstract_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.image.AbstractImage",
            "id": r["id"],
            "uploadedFile": r["uploaded_file_id"],
            "originalFilename": r["original_filename"],
            "width": r["width"],
            "height": r["height"],
            "depth": 1,
            "duration": 1,
            "channels": 3,
            "physicalSizeX": r["mpp"],
            "physicalSizeY": r["mpp"],
            "bitPerSample": 8,
            "samplePerPixel": 3,
            "created": _ms(r["created"]),
            "updated": None,
            "deleted": None,
        }

    # -- image instances ----------------------------------------------------------------------

    def _new_instance(self, ai: int, pid: int, user_id: int, t: int) -> int:
        ii = self._id()
        self.conn.execute(
            "INSERT INTO image_instances VALUES (?, ?, ?, ?, ?, NULL)", (ii, ai, pid, user_id, t)
        )
        return ii

    def add_instance(self, base_image: int, pid: int, user: sqlite3.Row) -> dict[str, Any]:
        """``POST /api/imageinstance.json``: an uploaded image in one more project."""
        with self.lock:
            self._row("abstract_images", base_image, "AbstractImage")
            self.check_member(pid, user)
            if self._one(
                "SELECT id FROM image_instances WHERE base_image_id=? AND project_id=?",
                (base_image, pid),
            ):
                raise Conflict(f"Image {base_image} already in project {pid}")
            return self.get_image(self._new_instance(base_image, pid, user["id"], now_ms()))

    _IMAGE_SQL = (
        "SELECT i.*, a.original_filename, a.width, a.height, a.mpp, a.uploaded_file_id, "
        "p.blind_mode, (SELECT COUNT(*) FROM annotations n WHERE n.image_id = i.id) AS n_ann "
        "FROM image_instances i JOIN abstract_images a ON a.id = i.base_image_id "
        "JOIN projects p ON p.id = i.project_id"
    )

    def _image_json(self, r: sqlite3.Row) -> dict[str, Any]:
        # Blind mode: the names become the abstract image's id, for everyone.
        name = str(r["base_image_id"]) if r["blind_mode"] else r["original_filename"]
        return {
            "class": IMAGE_CLASS,
            "id": r["id"],
            "baseImage": r["base_image_id"],
            "project": r["project_id"],
            "user": r["user_id"],
            "instanceFilename": name,
            "originalFilename": name,
            "blindedName": str(r["base_image_id"]) if r["blind_mode"] else None,
            "width": r["width"],
            "height": r["height"],
            "depth": 1,
            "duration": 1,
            "channels": 3,
            "physicalSizeX": r["mpp"],
            "physicalSizeY": r["mpp"],
            "physicalSizeZ": None,
            "fps": None,
            "zoom": 1,
            "magnification": None,
            "bitPerSample": 8,
            "samplePerPixel": 3,
            "contentType": "image/png",
            "numberOfAnnotations": r["n_ann"],
            "numberOfJobAnnotations": 0,
            "numberOfReviewedAnnotations": 0,
            "reviewed": False,
            "inReview": False,
            "created": _ms(r["created"]),
            "updated": _ms(r["updated"]),
            "deleted": None,
        }

    def get_image(self, iid: int) -> dict[str, Any]:
        with self.lock:
            row = self._one(f"{self._IMAGE_SQL} WHERE i.id = ?", (iid,))
            if row is None:
                raise NotFound(f"ImageInstance {iid} not found")
            return self._image_json(row)

    def project_images(self, pid: int) -> list[dict[str, Any]]:
        with self.lock:
            self._row("projects", pid, "Project")
            rows = self._all(f"{self._IMAGE_SQL} WHERE i.project_id = ? ORDER BY i.id", (pid,))
            return [self._image_json(r) for r in rows]

    # -- properties -------------------------------------------------------------------------

    def _property_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.meta.Property",
            "id": r["id"],
            "domainClassName": r["domain_class"],
            "domainIdent": r["domain_ident"],
            "key": r["key"],
            "value": r["value"],
            "created": _ms(r["created"]),
            "updated": _ms(r["updated"]),
            "deleted": None,
        }

    def properties(self, domain_class: str, ident: int) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._all(
                "SELECT * FROM properties WHERE domain_class=? AND domain_ident=? ORDER BY id",
                (domain_class, ident),
            )
            return [self._property_json(r) for r in rows]

    def set_property(
        self, domain_class: str, ident: int, data: dict[str, Any], pid: int | None = None
    ) -> dict[str, Any]:
        """Create (``pid`` None) or update a property. As on the real server, a second
        property with the same key is not refused."""
        key, value = data.get("key"), data.get("value")
        if not key:
            raise BadRequest("property needs a key")
        with self.lock:
            if domain_class == IMAGE_CLASS:
                self.get_image(ident)
            if pid is None:
                pid = self._id()
                self.conn.execute(
                    "INSERT INTO properties VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (pid, domain_class, ident, key, str(value), now_ms()),
                )
            else:
                cur = self.conn.execute(
                    "UPDATE properties SET key=?, value=?, updated=? WHERE id=?",
                    (key, str(value), now_ms(), pid),
                )
                if cur.rowcount == 0:
                    raise NotFound(f"Property {pid} not found")
            return self._property_json(self._row("properties", pid, "Property"))
