"""A local HTTP server that speaks the subset of Cytomine's REST API histocurate uses.

Real HTTP on 127.0.0.1, SQLite storage, the HMAC-SHA1 signature checked on every ``/api``
and upload request (wrong key: 401; PIMS: 400 with a list body), the JSON shapes and error
bodies of the real server (``{"errors": {"message": ...}}``, 400 for a conflict), the
behaviour of one server build (`versions.ServerProfile`, the current release by default),
PIMS's asynchronous import (`pims`), and optional fault injection (`FaultInjector`). Users
are created by the admin (`SandboxDB.create_user`, `histocurate sandbox-user`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from histocurate.demo.sandbox.db import BadRequest, Conflict, Forbidden, NotFound
from histocurate.demo.sandbox.faults import FaultInjector
from histocurate.demo.sandbox.pims import Importer, PimsError
from histocurate.demo.sandbox.routes import (
    PIMS_HANDLER,
    ROUTES,
    Request,
    Unauthorized,
    pims_routes,
    pims_upload,
)
from histocurate.demo.sandbox.store import SandboxDB
from histocurate.demo.sandbox.versions import ServerProfile, profile

log = logging.getLogger(__name__)
_AUTH = re.compile(r"^CYTOMINE (?P<public>[^:\s]+):(?P<signature>\S+)$")
_STATUS = {BadRequest: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 400}


def signature(
    private_key: str, method: str, content_type: str, date: str, path: str | None = None
) -> str:
    """The request signature: base64(HMAC-SHA1(key, METHOD\\n\\nCONTENT_TYPE\\nDATE)), with
    ``\\nPATH?QUERY`` appended on builds that sign the path (before 2025-12-18)."""
    token = f"{method}\n\n{content_type}\n{date}" + ("" if path is None else f"\n{path}")
    digest = hmac.new(private_key.encode(), token.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per answer
    wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request)
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authenticate(self, method: str) -> sqlite3.Row:
        match = _AUTH.match(self.headers.get("authorization", ""))
        date = self.headers.get("date")
        if match is None or not date:
            raise Unauthorized("Full authentication is required to access this resource")
        user = self.server.db.user_by_public_key(match["public"])
        path = self.path if self.server.profile.signs_path else None
        expected = (
            ""
            if user is None
            else signature(
                user["private_key"], method, self.headers.get("content-type", ""), date, path
            )
        )
        if user is None or not hmac.compare_digest(expected, match["signature"]):
            raise Unauthorized("Bad credentials")
        return user

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.server.faults.draw(url.path)
        if fault is not None and not fault.after:
            self._inject(fault.kind)
            return
        status, payload = self._dispatch(method, url.path, dict(parse_qsl(url.query)), body)
        if fault is not None:
            self._inject(fault.kind)
            return
        self._send(status, payload)

    def _inject(self, kind: str) -> None:
        if kind in ("500", "503"):
            self._send(int(kind), {"errors": f"injected fault {kind}"})
        else:
            if kind == "hang":
                time.sleep(self.server.faults.hang_s)
            self._drop()

    def _dispatch(
        self, method: str, path: str, params: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        db = self.server.db
        pims = False
        try:
            for verb, pattern, handler in self.server.routes:
                match = pattern.match(path)
                if verb != method or match is None:
                    continue
                pims = handler is pims_upload
                user = None if path.startswith("/server/") else self._authenticate(method)
                request = Request(
                    db, user, params, body, match.groupdict(), self.headers, self.server
                )
                return 200, handler(request)
            if any(p.match(path) for _, p, _ in self.server.routes):
                return 405, {"errors": {"message": f"method {method} not allowed on {path}"}}
            return 404, {"errors": {"message": f"no such resource {path}"}}
        except PimsError as exc:
            db.rollback()
            return 400, [{"status": exc.status, "error": str(exc)}]
        except tuple(_STATUS) as exc:
            db.rollback()
            if pims:  # PIMS answers every failure as 400 with a list body
                return 400, [{"status": _STATUS[type(exc)], "error": str(exc)}]
            return _STATUS[type(exc)], {"errors": {"message": str(exc)}}
        except Exception as exc:  # a bug in the sandbox: answer like a server would
            db.rollback()
            log.exception("sandbox error on %s %s", method, path)
            return 500, {"errors": {"message": f"internal error: {type(exc).__name__}"}}


class SandboxHTTPServer(ThreadingHTTPServer):
    """The threaded HTTP server holding the database and the fault injector."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        db: SandboxDB,
        faults: FaultInjector,
        server_profile: ServerProfile | None = None,
        import_delay_s: float = 0.0,
    ) -> None:
        super().__init__(address, _Handler)
        self.db = db
        self.faults = faults
        self.profile = server_profile or profile(None)
        self.importer = Importer(db, import_delay_s)
        self.routes = [*ROUTES, *pims_routes(self.profile)]
        self.upload_handler: Callable[[Request], Any] = PIMS_HANDLER

    def server_close(self) -> None:
        self.importer.close()
        super().server_close()

    @property
    def host(self) -> str:
        """``http://127.0.0.1:<port>``, what clients connect to."""
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def serve_in_thread(
    db: SandboxDB | str | Path = ":memory:",
    *,
    port: int = 0,
    faults: FaultInjector | None = None,
    server_version: str | None = None,
    import_delay_s: float = 0.0,
) -> Iterator[SandboxHTTPServer]:
    """Run a sandbox server on 127.0.0.1 (``port=0``: a free port) in a background thread,
    behaving as the build ``server_version`` (`versions.PROFILES`; default: current)."""
    database = db if isinstance(db, SandboxDB) else SandboxDB(db)
    server = SandboxHTTPServer(
        ("127.0.0.1", port),
        database,
        faults or FaultInjector(),
        profile(server_version),
        import_delay_s,
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if not isinstance(db, SandboxDB):
            database.close()


def serve_forever(
    db_path: str | Path,
    *,
    port: int,
    faults: FaultInjector,
    ready: Callable[[str], None],
    server_version: str | None = None,
    import_delay_s: float = 0.0,
) -> None:
    """Run in the foreground until interrupted (the `histocurate sandbox-server` command)."""
    db = SandboxDB(db_path)
    server = SandboxHTTPServer(
        ("127.0.0.1", port), db, faults, profile(server_version), import_delay_s
    )
    ready(server.host)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        db.close()
