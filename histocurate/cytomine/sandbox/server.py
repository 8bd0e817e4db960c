"""A local HTTP server that speaks the subset of Cytomine's REST API histocurate uses.

Real HTTP on 127.0.0.1, SQLite storage, the 4.x HMAC-SHA1 signature checked on every
``/api`` and ``/upload`` request (wrong key: 401), JSON shapes of the real server, and
optional fault injection (`FaultInjector`). Users are created by the admin
(`SandboxDB.create_user`, `histocurate sandbox-user`), never through the API.
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

from histocurate.cytomine.sandbox.db import BadRequest, Conflict, Forbidden, NotFound
from histocurate.cytomine.sandbox.faults import FaultInjector
from histocurate.cytomine.sandbox.routes import ROUTES, Request, Unauthorized
from histocurate.cytomine.sandbox.store import SandboxDB

log = logging.getLogger(__name__)
_AUTH = re.compile(r"^CYTOMINE (?P<public>[^:\s]+):(?P<signature>\S+)$")
_STATUS = {BadRequest: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409}


def signature(private_key: str, method: str, content_type: str, date: str) -> str:
    """The 4.x request signature: base64(HMAC-SHA1(key, METHOD\\n\\nCONTENT_TYPE\\nDATE))."""
    token = f"{method}\n\n{content_type}\n{date}".encode()
    digest = hmac.new(private_key.encode(), token, hashlib.sha1).digest()
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
        expected = "" if user is None else signature(
            user["private_key"], method, self.headers.get("content-type", ""), date
        )  # fmt: skip
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
        try:
            for verb, pattern, handler in ROUTES:
                match = pattern.match(path)
                if verb != method or match is None:
                    continue
                user = None if path.startswith("/server/") else self._authenticate(method)
                request = Request(db, user, params, body, match.groupdict(), self.headers)
                return 200, handler(request)
            if any(p.match(path) for _, p, _ in ROUTES):
                return 405, {"errors": f"method {method} not allowed on {path}"}
            return 404, {"errors": f"no such resource {path}"}
        except tuple(_STATUS) as exc:
            db.rollback()
            return _STATUS[type(exc)], {"errors": str(exc), "success": False}
        except Exception as exc:  # a bug in the sandbox: answer like a server would
            db.rollback()
            log.exception("sandbox error on %s %s", method, path)
            return 500, {"errors": f"internal error: {type(exc).__name__}"}


class SandboxHTTPServer(ThreadingHTTPServer):
    """The threaded HTTP server holding the database and the fault injector."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], db: SandboxDB, faults: FaultInjector) -> None:
        super().__init__(address, _Handler)
        self.db = db
        self.faults = faults

    @property
    def host(self) -> str:
        """``http://127.0.0.1:<port>``, what clients connect to."""
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def serve_in_thread(
    db: SandboxDB | str | Path = ":memory:", *, port: int = 0, faults: FaultInjector | None = None
) -> Iterator[SandboxHTTPServer]:
    """Run a sandbox server on 127.0.0.1 (``port=0``: a free port) in a background thread."""
    database = db if isinstance(db, SandboxDB) else SandboxDB(db)
    server = SandboxHTTPServer(("127.0.0.1", port), database, faults or FaultInjector())
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
    db_path: str | Path, *, port: int, faults: FaultInjector, ready: Callable[[str], None]
) -> None:
    """Run in the foreground until interrupted (the `histocurate sandbox-server` command)."""
    db = SandboxDB(db_path)
    server = SandboxHTTPServer(("127.0.0.1", port), db, faults)
    ready(server.host)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        db.close()
