"""Images (uploads, image instances) and key/value properties of the sandbox database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from histocurate.cytomine.sandbox.db import (
    IMAGE_CLASS,
    PKG,
    BadRequest,
    Conflict,
    CoreDB,
    NotFound,
    _ms,
    now_ms,
)


class ImageDB(CoreDB):
    """`CoreDB` plus uploaded images and properties."""

    # -- images -----------------------------------------------------------------------------

    def add_upload(
        self, *, filename: str, size: int, width: int, height: int, mpp: float | None,
        storage_id: int, user_id: int, projects: Iterable[int],
    ) -> dict[str, Any]:  # fmt: skip
        """Store an uploaded image: uploaded file, abstract image, one instance per project."""
        projects = list(projects)
        with self.lock:
            for pid in projects:
                self.get_project(pid)
            if self._one("SELECT id FROM storages WHERE id = ?", (storage_id,)) is None:
                raise BadRequest(f"Storage {storage_id} not found")
            t = now_ms()
            ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
            uf, ai = self._id(), self._id()
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO uploaded_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uf, f"{uf}/{filename}", filename, size, ext, f"image/{ext}", storage_id,
                 user_id, ",".join(map(str, projects)), t),
            )  # fmt: skip
            self.conn.execute(
                "INSERT INTO abstract_images VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ai, uf, filename, width, height, mpp, t),
            )
            instances = []
            for pid in projects:
                ii = self._id()
                self.conn.execute(
                    "INSERT INTO image_instances VALUES (?, ?, ?, ?, ?, NULL)",
                    (ii, ai, pid, user_id, t),
                )
                instances.append(ii)
            self.conn.execute("COMMIT")
            uploaded = self._uploaded_json(self._row("uploaded_files", uf))
            abstract = self._abstract_json(self._row("abstract_images", ai))
            return {
                "uploadedFile": uploaded,
                "images": [
                    {"image": abstract, "imageInstances": [self.get_image(i) for i in instances]}
                ],
            }

    def _uploaded_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.image.UploadedFile", "id": r["id"], "filename": r["filename"],
            "originalFilename": r["original_filename"], "size": r["size"], "ext": r["ext"],
            "contentType": r["content_type"], "storage": r["storage_id"], "user": r["user_id"],
            "projects": [int(p) for p in r["projects"].split(",") if p], "status": 100,
            "statusText": "DEPLOYED", "parent": None, "created": _ms(r["created"]),
            "updated": None, "deleted": None,
        }  # fmt: skip

    def _abstract_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.image.AbstractImage", "id": r["id"],
            "uploadedFile": r["uploaded_file_id"], "originalFilename": r["original_filename"],
            "width": r["width"], "height": r["height"], "depth": 1, "duration": 1, "channels": 3,
            "physicalSizeX": r["mpp"], "physicalSizeY": r["mpp"], "bitPerSample": 8,
            "samplePerPixel": 3, "created": _ms(r["created"]), "updated": None, "deleted": None,
        }  # fmt: skip

    _IMAGE_SQL = (
        "SELECT i.*, a.original_filename, a.width, a.height, a.mpp, a.uploaded_file_id, "
        "(SELECT COUNT(*) FROM annotations n WHERE n.image_id = i.id) AS n_annotations "
        "FROM image_instances i JOIN abstract_images a ON a.id = i.base_image_id"
    )

    def _image_json(self, r: sqlite3.Row) -> dict[str, Any]:
        name = r["original_filename"]
        return {
            "class": IMAGE_CLASS, "id": r["id"], "baseImage": r["base_image_id"],
            "project": r["project_id"], "user": r["user_id"], "instanceFilename": name,
            "originalFilename": name, "filename": f"{r['uploaded_file_id']}/{name}",
            "uploadedFile": r["uploaded_file_id"], "width": r["width"], "height": r["height"],
            "depth": 1, "duration": 1, "channels": 3, "physicalSizeX": r["mpp"],
            "physicalSizeY": r["mpp"], "physicalSizeZ": None, "fps": None, "zoom": 1,
            "magnification": None, "bitPerSample": 8, "samplePerPixel": 3,
            "contentType": "image/png", "numberOfAnnotations": r["n_annotations"],
            "numberOfJobAnnotations": 0, "numberOfReviewedAnnotations": 0, "reviewed": False,
            "inReview": False, "blindedName": None, "created": _ms(r["created"]),
            "updated": _ms(r["updated"]), "deleted": None,
        }  # fmt: skip

    def get_image(self, iid: int) -> dict[str, Any]:
        with self.lock:
            row = self._one(f"{self._IMAGE_SQL} WHERE i.id = ?", (iid,))
            if row is None:
                raise NotFound(f"ImageInstance {iid} not found")
            return self._image_json(row)

    def project_images(self, pid: int) -> list[dict[str, Any]]:
        with self.lock:
            self.get_project(pid)
            rows = self._all(f"{self._IMAGE_SQL} WHERE i.project_id = ? ORDER BY i.id", (pid,))
            return [self._image_json(r) for r in rows]

    # -- properties -------------------------------------------------------------------------

    def _property_json(self, r: sqlite3.Row) -> dict[str, Any]:
        return {
            "class": f"{PKG}.meta.Property", "id": r["id"], "domainClassName": r["domain_class"],
            "domainIdent": r["domain_ident"], "key": r["key"], "value": r["value"],
            "created": _ms(r["created"]), "updated": _ms(r["updated"]), "deleted": None,
        }  # fmt: skip

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
        key, value = data.get("key"), data.get("value")
        if not key:
            raise BadRequest("property needs a key")
        with self.lock:
            if domain_class == IMAGE_CLASS:
                self.get_image(ident)
            if pid is None:
                if self._one(
                    "SELECT id FROM properties WHERE domain_class=? AND domain_ident=? AND key=?",
                    (domain_class, ident, key),
                ):
                    raise Conflict(f"Property {key} already exists for this domain")
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
            return self._property_json(self._one("SELECT * FROM properties WHERE id=?", (pid,)))  # type: ignore[arg-type]
