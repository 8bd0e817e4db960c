"""The sandbox's PIMS: ``POST /ims/upload`` (and ``/upload`` on older profiles).

As the real PIMS does: the caller's signature, storage and projects are checked, an
uploaded file is created, and then either the import runs inside the request
(``sync=true``) or the answer comes at once with ``images: []`` and the import runs in the
background after ``import_delay_s`` (``sync=false``, what histocurate uses). Meanwhile
the file is in an import stage (DETECTING_FORMAT, 10). The import creates the abstract
image (with the upload's ``keys``/``values`` as its properties), sets the file DEPLOYED
and creates the image instances only at the very end; a file it cannot read ends in
ERROR_FORMAT (11), any other failure in ERROR_UNEXPECTED (41), as PIMS's listener does.
Every failure of the request itself is HTTP 400 with a JSON list body
``[{"status": ..., "error": ...}]``.
"""

from __future__ import annotations

import io
import threading
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from histocurate.demo.sandbox.db import BadRequest, NotFound
from histocurate.demo.sandbox.images import DETECTING_FORMAT, ERROR_FORMAT, ERROR_UNEXPECTED

if TYPE_CHECKING:
    from histocurate.demo.sandbox.routes import Request
    from histocurate.demo.sandbox.store import SandboxDB


class PimsError(Exception):
    """A PIMS failure: answered as HTTP 400 with ``[{"status": status, "error": message}]``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode(data: bytes) -> tuple[int, int, float | None]:
    """Width, height and resolution (um/px, from the PNG's pHYs) of an image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            width, height = img.size
            dpi = img.info.get("dpi")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ValueError("format not supported or file damaged") from None
    mpp = round(25400.0 / float(dpi[0]), 9) if dpi and dpi[0] else None
    return width, height, mpp


class Importer:
    """PIMS's background import of uploaded files (one timer per upload)."""

    def __init__(self, db: SandboxDB, delay_s: float = 0.0) -> None:
        self.db = db
        self.delay_s = delay_s
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()

    def run(self, uf: int, data: bytes, properties: dict[str, str]) -> dict[str, Any] | None:
        """Import one file now: its images, or None when it cannot be read (file failed)."""
        try:
            width, height, mpp = decode(data)
        except ValueError:
            self.db.fail_upload(uf, ERROR_FORMAT)
            return None
        try:
            return self.db.finish_upload(
                uf, width=width, height=height, mpp=mpp, properties=properties
            )
        except Exception:
            self.db.rollback()
            self.db.fail_upload(uf, ERROR_UNEXPECTED)
            raise

    def submit(self, uf: int, data: bytes, properties: dict[str, str]) -> None:
        self.db.set_upload_status(uf, DETECTING_FORMAT)  # the background import has begun

        def job() -> None:
            with self._lock:
                self._timers.discard(timer)
            try:
                self.run(uf, data, properties)
            except Exception:  # the database closed under a stopping server
                return

        timer = threading.Timer(self.delay_s, job)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def close(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers), set()
        for timer in timers:
            timer.cancel()


def _file(r: Request) -> tuple[str, bytes]:
    ctype = r.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise PimsError(400, "upload needs multipart/form-data")
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + r.body
    )
    parts = [
        p
        for p in message.iter_parts()
        if p.get_param("name", header="content-disposition") == "files[]"
    ]
    if len(parts) != 1:
        raise PimsError(400, "upload needs exactly one files[] part")
    payload = parts[0].get_payload(decode=True)
    return str(parts[0].get_filename() or "upload"), payload if isinstance(payload, bytes) else b""


def upload(r: Request) -> list[dict[str, Any]]:
    """``POST /ims/upload``: check, store the uploaded file, import it (now or later)."""
    filename, data = _file(r)
    try:
        storage_id = int(r.params.get("storage") or r.params.get("idStorage") or 0)
        projects = r.params.get("projects") or r.params.get("idProject") or ""
        pids = [int(p) for p in projects.split(",") if p]
    except ValueError:
        raise PimsError(400, "storage and projects must be ids") from None
    owner = r.db.storage_owner(storage_id)
    if owner is None:
        raise PimsError(404, f"Storage {storage_id} not found")
    if owner != r.me["id"] and not r.me["admin"]:
        raise PimsError(403, f"User {r.me['username']} cannot write to storage {storage_id}")
    for pid in pids:
        try:
            r.db.check_member(pid, r.me)
        except NotFound:
            raise PimsError(404, f"Project {pid} not found") from None
        except Exception as exc:
            raise PimsError(403, str(exc)) from None
    keys = [k for k in (r.params.get("keys") or "").split(",") if k]
    values = (r.params.get("values") or "").split(",")
    props = dict(zip(keys, values, strict=False))
    try:
        uploaded = r.db.start_upload(
            filename=filename,
            size=len(data),
            storage_id=storage_id,
            user_id=r.me["id"],
            projects=pids,
        )
    except (NotFound, BadRequest) as exc:
        raise PimsError(404, str(exc)) from None
    importer: Importer = r.server.importer
    if r.params.get("sync", "").lower() in ("true", "1"):
        if importer.delay_s:
            threading.Event().wait(importer.delay_s)
        images = importer.run(uploaded["id"], data, props)
        if images is None:
            raise PimsError(500, f"{filename}: format not supported or file damaged")
        return [{"uploadedFile": r.db.uploaded_file(uploaded["id"]), "images": [images]}]
    importer.submit(uploaded["id"], data, props)
    return [{"uploadedFile": uploaded, "images": []}]
