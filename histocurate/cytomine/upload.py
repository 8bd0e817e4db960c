"""Uploading a tile image through PIMS, never twice.

Where. Current deployments serve PIMS at ``{host}/ims/upload`` only; builds from December
2025 to March 2026 also took ``{host}/upload`` (the only route the library client knows).
The URL is ``[cytomine] upload_url`` when set, else discovered at the first upload:
``/ims/upload`` first, then ``/upload``; a route that is not there (404, 405, a web page)
has stored nothing, so trying the next one is safe.

How. The file is posted with ``sync=false``: PIMS answers at once with the uploaded
file, imports it in the background and creates the image instance only at the very end.
Its status is polled (``GET /api/uploadedfile/{id}.json``) until deployed or failed, for
at most ``RetryPolicy.upload_wait_s``. PIMS's statuses: 0 uploaded, then one code per
stage (10 detecting the format, 20 extracting data, 30 converting, 40 deploying, 50
unpacking, 60 checking integrity), 100 deployed. A stage's error is its code + 1 (11, 21,
31, 41, 51, 61; anything unexpected is 41). Any status that is neither a stage in progress
nor deployed counts as failed (the old IMS's 3 and 4 included), so the tile is retried.

Never twice. Before posting, and again before any retry of a post whose answer was lost,
the user's uploaded files are searched for this file name in this project: an upload
already deployed or still importing is followed, not re-sent. PIMS's own errors (HTTP 400
with a JSON list body) are the tile's: they are raised with PIMS's message and the export
goes on with the other tiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from cytomine import Cytomine
from cytomine.cytomine import CytomineAuth
from requests_toolbelt import MultipartEncoder

from histocurate.cytomine.client import Connection, describe_answer
from histocurate.cytomine.credentials import scrub
from histocurate.cytomine.images import ProjectImages, attach, project_images
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.retry import CytomineCallError, poll, retrying, seconds
from histocurate.errors import HistocurateError, UserInputError

DEPLOYED = 100
# PIMS's stages (pims/importer/listeners.py, cytomine.models.UploadedFile): still importing.
IN_PROGRESS = {
    0: "UPLOADED",
    10: "DETECTING_FORMAT",
    20: "EXTRACTING_DATA",
    30: "CONVERTING",
    40: "DEPLOYING",
    50: "UNPACKING",
    60: "CHECKING_INTEGRITY",
}
# Names of the error statuses (stage + 1; 41 is also ERROR_UNEXPECTED and ERROR_STORAGE;
# 3 and 4 are the old IMS's). Every other status that is not in progress fails too.
ERRORS = {
    3: "ERROR_FORMAT",
    4: "ERROR_CONVERT",
    11: "ERROR_FORMAT",
    21: "ERROR_EXTRACTION",
    31: "ERROR_CONVERSION",
    41: "ERROR_DEPLOYMENT or ERROR_UNEXPECTED",
    51: "ERROR_UNPACKING",
    61: "ERROR_INTEGRITY",
}
ROUTES = ("/ims/upload", "/upload")


def status_of(uploaded: dict[str, Any]) -> int:
    """The status code of an uploaded file (missing: 0, just uploaded)."""
    try:
        return int(uploaded.get("status") or 0)
    except (TypeError, ValueError):
        return -1  # not a code PIMS writes: failed


def failed(code: int) -> bool:
    """Whether an upload with this status will never be deployed."""
    return code != DEPLOYED and code not in IN_PROGRESS


def status_name(code: int) -> str:
    return (
        ERRORS.get(code)
        or IN_PROGRESS.get(code)
        or ("DEPLOYED" if code == DEPLOYED else "an unknown status")
    )


class UploadFailed(HistocurateError):
    """PIMS refused or could not import one file (its message kept); the others go on."""


class UploadRouteMissing(UserInputError):
    """No upload route answers on the server."""


class _NoRoute(Exception):
    pass


def _post_once(conn: Connection, url: str, path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """POST the file to ``url``; the uploaded file PIMS answers with."""
    with path.open("rb") as handle:
        form = MultipartEncoder(fields={"files[]": (path.name, handle, "image/png")})
        auth = CytomineAuth(
            conn.credentials.public_key, conn.credentials.private_key, conn.base_url, ""
        )
        try:
            answer = conn.client._session.post(
                url,
                auth=auth,
                headers=Cytomine._headers(content_type=form.content_type),
                params=params,
                data=form,
                allow_redirects=False,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CytomineCallError(f"upload {path.name}", None, type(exc).__name__) from None
    body: Any = None
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.status_code in (404, 405) or (answer.status_code == 200 and body is None):
        raise _NoRoute(url)
    if answer.status_code != 200:
        detail = scrub(describe_answer(answer), conn.credentials)
        if answer.status_code == 401:
            conn.failure(f"upload {path.name}", 401, detail)  # raises the keys error
        raise CytomineCallError(f"upload {path.name} (PIMS)", answer.status_code, detail)
    first = body[0] if isinstance(body, list) and body else body
    uploaded = first.get("uploadedFile") if isinstance(first, dict) else None
    if not isinstance(uploaded, dict) or "id" not in uploaded:
        raise CytomineCallError(f"upload {path.name}", 200, "PIMS answered without the file")
    return uploaded


def post_upload(conn: Connection, path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One upload attempt, discovering the route on the first one."""
    routes = [conn.upload_url] if conn.upload_url else [f"{conn.base_url}{r}" for r in ROUTES]
    for url in routes:
        try:
            uploaded = _post_once(conn, url, path, params)
        except _NoRoute:
            continue
        conn.upload_url = url
        return uploaded
    raise UploadRouteMissing(
        f"Cytomine at {conn.base_url} takes no upload at {' or '.join(routes)} (404/405 or a web "
        "page): set [cytomine] upload_url to the address where PIMS takes uploads"
    )


def find_upload(
    conn: Connection, name: str, *, storage_id: int, project_id: int
) -> dict[str, Any] | None:
    """The newest uploaded file of this name for this project that did not fail."""
    files = list_all(conn, "uploadedfile.json", "list uploaded files")
    mine = [
        f
        for f in files
        if f.get("originalFilename") == name
        and int(f.get("storage") or -1) == storage_id
        and project_id in [int(p) for p in (f.get("projects") or [])]
        and not failed(status_of(f))
    ]
    return max(mine, key=lambda f: int(f["id"])) if mine else None


def wait_deployed(conn: Connection, uploaded: dict[str, Any], name: str) -> int:
    """Poll an uploaded file until deployed; return its abstract image id."""

    def status() -> dict[str, Any] | None:
        now = conn.get(f"uploadedfile/{uploaded['id']}.json", f"status of upload {name}")
        return None if status_of(now) in IN_PROGRESS else now

    done = poll(f"import of {name}", status, conn.policy, deadline_s=conn.policy.upload_wait_s)
    if done is None:
        raise UploadFailed(
            f"{name}: PIMS is still importing it (uploaded file {uploaded['id']}) after "
            f"{seconds(conn.policy.upload_wait_s)}; re-run export later (it will not upload "
            "again)"
        )
    code = status_of(done)
    if code != DEPLOYED:
        raise UploadFailed(
            f"{name}: PIMS could not import it (uploaded file {uploaded['id']}, status {code} "
            f"{status_name(code)}); check the file, then re-run export to retry this tile"
        )
    image = conn.get(f"uploadedfile/{uploaded['id']}/abstractimage.json", f"image of {name}")
    return int(image["id"])


def instance_of(
    conn: Connection, images: ProjectImages, base_image: int, name: str
) -> dict[str, Any]:
    """The project's instance of a deployed image: PIMS creates it last, so wait for it a
    little; attach the image ourselves only when PIMS did not (an instance deleted since)."""

    def appeared() -> dict[str, Any] | None:
        return next(
            (
                i
                for i in project_images(conn, images.project_id)
                if int(i.get("baseImage") or -1) == base_image
            ),
            None,
        )

    found = images.of_base(base_image) or poll(
        f"instance of {name}",
        appeared,
        conn.policy,
        deadline_s=min(10.0, conn.policy.upload_wait_s),
    )
    if found is None:
        return attach(conn, images, base_image)
    if images.of_base(base_image) is None:
        images.add(found, {})
    return found


def upload_tile(
    conn: Connection,
    images: ProjectImages,
    path: Path,
    *,
    storage_id: int,
    properties: dict[str, str],
) -> tuple[dict[str, Any], str]:
    """The project's image of the file at ``path``: found, followed, or uploaded once.

    Returns (image instance, what was done: "resumed" or "uploaded").
    """
    name = path.name
    project_id = images.project_id

    def in_progress() -> dict[str, Any] | None:
        return find_upload(conn, name, storage_id=storage_id, project_id=project_id)

    action = "resumed"
    uploaded = in_progress()
    if uploaded is None:
        action = "uploaded"
        params = {
            "idStorage": storage_id,
            "storage": storage_id,
            "idProject": project_id,
            "projects": project_id,
            "sync": "false",
            "keys": ",".join(properties),
            "values": ",".join(properties.values()),
        }
        try:
            uploaded = retrying(
                f"upload {name}",
                lambda: post_upload(conn, path, params),
                conn.policy,
                reconcile=in_progress,
                on_retry=conn._count_retry,
            )
        except CytomineCallError as exc:
            if exc.transient:
                raise
            raise UploadFailed(
                f"{name}: PIMS refused it (HTTP {exc.status}): {exc.detail}"
            ) from None
    base = wait_deployed(conn, uploaded, name)
    return instance_of(conn, images, base, name), action
