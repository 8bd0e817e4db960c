"""The campaign against every server build the client supports (sandbox profiles), the one
it cannot speak, and `connect()`'s one-line errors for hosts that are not a Cytomine API."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest
import requests

from data_schema.points import POINTS
from histocurate.cytomine.client import CytomineUnreachable, connect
from histocurate.cytomine.credentials import Credentials
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.probe import CytomineServerVersionError
from histocurate.cytomine.projects import ensure_ontology, resolve_users
from histocurate.cytomine.retry import RetryPolicy
from histocurate.demo.annotation import running_sandbox
from histocurate.demo.sandbox import PROFILES, SUPPORTED, SandboxDB, serve_in_thread
from histocurate.io import read_table
from tests.cytomine_support import (
    ANNOTATORS,
    FAST,
    IMPORT_DELAY_S,
    bench,
    make_tiles,
    sorted_clicks,
)

QUICK = RetryPolicy(
    attempts=2, backoff_s=0.05, timeout_s=0.5, connect_timeout_s=0.5, connect_deadline_s=1.0
)


@pytest.mark.parametrize("version", [p.name for p in SUPPORTED])
def test_campaign_against_each_supported_server(version, tmp_path, monkeypatch):
    with running_sandbox(
        ANNOTATORS, server_version=version, import_delay_s=IMPORT_DELAY_S
    ) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(3, slide=f"v{version[-2:]}"))
        exported = b.export("campaign", k=2)
        assert exported.exit_code == 0, exported.failure_lines()
        made = b.annotate("campaign")
        imported = b.import_("campaign")
        assert imported.exit_code == 0 and imported.rejected == {}
        points = read_table(b.workspace.points, POINTS)
        pd.testing.assert_frame_equal(sorted_clicks(points), sorted_clicks(made.clicks))
        assert b.export("campaign", k=2).report().summary[0].startswith("3 tile(s) of LUAD: 0 up")
        profile = PROFILES[version]
        answer = requests.get(f"{sandbox.host}/api/user/alice.json", timeout=5)
        assert answer.status_code == 401  # unsigned; signed lookups differ by build:
        with connect(sandbox.credentials(), FAST) as conn:
            status = conn.client._session.get(
                f"{sandbox.host}/api/user/alice.json",
                auth=_auth(sandbox),
                headers=_headers(),
            ).status_code
            assert status == (200 if profile.user_by_name else 400)
            assert resolve_users(conn, ["alice"]) == {"alice": _user_id(sandbox, "alice")}


def _auth(sandbox):
    from cytomine.cytomine import CytomineAuth

    public, private = sandbox.keys[sandbox.admin]
    return CytomineAuth(public, private, "", "")


def _headers() -> dict[str, str]:
    from cytomine import Cytomine

    return Cytomine._headers()


def _user_id(sandbox, name: str) -> int:
    return next(u["id"] for u in sandbox.server.db.list_users() if u["username"] == name)


def test_a_path_signing_server_is_named_not_blamed_on_the_keys():
    with (
        running_sandbox(["alice"], server_version="2025-10") as sandbox,
        pytest.raises(CytomineServerVersionError) as info,
        connect(sandbox.credentials(), QUICK),
    ):
        pass
    message = str(info.value)
    assert "before 2025-12-18" in message
    assert "unsupported: histocurate supports Cytomine builds from 2025-12-18 on (" in message
    assert "which histocurate" not in message and "refused the keys" not in message
    assert sandbox.keys[sandbox.admin][1] not in message


def test_repository_lists_are_read_whole():
    db = SandboxDB()
    public, private = db.create_user("admin", admin=True)
    admin_id = db.user_by_public_key(public)["id"]  # type: ignore[index]
    for i in range(24):
        db.create_ontology(f"other {i}", admin_id)
    last = db.create_ontology("histocurate cell types (paged)", admin_id)
    with (
        serve_in_thread(db) as server,
        connect(Credentials(server.host, public, private), FAST) as conn,
    ):
        one_page = conn.get("ontology.json", max=0, offset=0)
        assert len(one_page["collection"]) == 20 and one_page["size"] == 25
        assert len(list_all(conn, "ontology.json")) == 25
        assert ensure_ontology(conn, "histocurate cell types (paged)") == last["id"]
        assert len(list_all(conn, "ontology.json")) == 25  # found on page 2: not made again
        assert len(list_all(conn, f"ontology/{last['id']}/term.json")) == 14


@contextmanager
def _fake_host(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Redirect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(301)
        self.send_header("Location", "https://cytomine.example.org" + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _WebUI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><html><body>Cytomine</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _WebUIBehindPing(BaseHTTPRequestHandler):
    """A proxy that passes the ping to the core but serves the web UI for /api/."""

    def do_GET(self) -> None:
        if self.path.startswith("/server/ping"):
            body, kind = b'{"alive": true, "version": "x"}', "application/json"
        else:
            body, kind = b"<!doctype html><html><body>Cytomine</body></html>", "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _connect_failure(host: str) -> CytomineUnreachable:
    with (
        pytest.raises(CytomineUnreachable) as info,
        connect(Credentials(host, "p", "k-secret"), QUICK),
    ):
        pass
    message = str(info.value)
    assert "\n" not in message and "k-secret" not in message and host in message
    return info.value


def _connect_error(host: str) -> str:
    return str(_connect_failure(host))


def test_connect_says_what_is_wrong_in_one_line():
    with _fake_host(_Redirect) as host:
        assert "redirects to https://cytomine.example.org" in _connect_error(host)
    with _fake_host(_WebUI) as host:
        assert "serves a web page, not Cytomine's API, on /server/ping" in _connect_error(host)
    with _fake_host(_WebUIBehindPing) as host:
        message = _connect_error(host)
        assert "serves a web page, not Cytomine's API, on /api/user/current.json" in message
        assert "/server/ping" not in message
    unresolved = _connect_failure("http://no-such-cytomine.invalid")
    assert "'no-such-cytomine.invalid' does not resolve (DNS failure)" in str(unresolved)
    assert "refused" not in str(unresolved) and not unresolved.transient
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = _connect_failure(f"http://127.0.0.1:{port}")
    assert "connection refused" in str(refused) and "waited up to 1 s" in str(refused)
    assert refused.transient
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        assert "timed out" in _connect_error(f"http://127.0.0.1:{silent.getsockname()[1]}")
