"""Bad input gets one clear line naming what is wrong and what to do (exit code 2), and no
key ever appears in it."""

from __future__ import annotations

import pytest

from histocurate.cytomine.client import connect
from histocurate.cytomine.projects import ensure_project
from histocurate.cytomine.rest import SignedSession
from tests.cytomine_support import (
    FAST,
    bench,
    make_tiles,
    unique,
)

SEEN: list[str] = []


def _error(run) -> str:
    assert run.exit_code == 2, run.failure_lines()
    [failed] = run.failed
    message = failed.error or ""
    assert "\n" not in message
    SEEN.append(message)
    return message


def _as(monkeypatch, sandbox, user: str) -> None:
    for key, value in sandbox.env(user).items():
        monkeypatch.setenv(key, value)


def test_bad_input_is_named(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(2, slide="bad"))
    keys = [k for pair in sandbox.keys.values() for k in pair]

    message = _error(b.export(unique(), annotators=["alice", "ghost", "phantom"]))
    assert "'ghost', 'phantom' do not exist" in message and "sandbox-user" in message

    taken = unique("taken")
    SignedSession(sandbox.host, *sandbox.keys["bob"], policy=FAST).request(
        "POST", "/api/project.json", body={"name": taken}
    )
    _as(monkeypatch, sandbox, "alice")  # alice cannot see bob's project
    message = _error(b.export(taken, annotators=["alice", "carol"]))
    assert "already exists" in message and "unique server-wide" in message

    name = unique("members")
    _as(monkeypatch, sandbox, sandbox.admin)
    b.export(name, annotators=["alice"])
    _as(monkeypatch, sandbox, "carol")  # not a member of it
    message = _error(b.import_(name))
    assert f"no Cytomine project named {name!r} visible to 'carol'" in message
    assert "member of the project" in message

    _as(monkeypatch, sandbox, "alice")
    theirs = next(
        s["id"] for s in sandbox.server.db.storages() if s["userId"] == _uid(sandbox, "bob")
    )
    stored = bench(
        sandbox, tmp_path / "storage", monkeypatch, make_tiles(1, slide="st"), storage=theirs
    )
    _as(monkeypatch, sandbox, "alice")
    message = _error(stored.export(unique(), annotators=["alice"]))
    assert f"storage {theirs} ([cytomine] storage) is not visible to 'alice'" in message
    assert "their storages" in message

    _as(monkeypatch, sandbox, sandbox.admin)
    admin = SignedSession(sandbox.host, *sandbox.keys[sandbox.admin], policy=FAST)
    lacking = unique("lacking")
    onto = admin.request("POST", "/api/ontology.json", body={"name": lacking})["data"]["id"]
    admin.request(
        "POST", "/api/term.json", body={"name": "Tumour", "ontology": onto, "color": "#000000"}
    )
    admin.request("POST", "/api/project.json", body={"name": lacking, "ontology": onto})
    message = _error(b.export(lacking, annotators=["alice"]))
    assert "lacks the term(s)" in message and "Lymphocyte" in message

    twice = unique("twice")
    with connect(sandbox.credentials(), FAST) as conn:
        info, _ = ensure_project(conn, twice)
    sandbox.server.db.create_term(
        {"name": "Lymphocyte", "ontology": info.ontology_id, "color": "#123456"}, allow_twice=True
    )
    message = _error(b.export(twice, annotators=["alice"]))
    assert "'Lymphocyte'" in message and "more than once" in message
    assert len(SEEN) == 6 and not any(k in text for text in SEEN for k in keys)


def _uid(sandbox, name: str) -> int:
    return next(u["id"] for u in sandbox.server.db.list_users() if u["username"] == name)


@pytest.mark.parametrize("bad", ["alice,alice", ""])
def test_annotator_lists_are_checked_before_connecting(sandbox, tmp_path, monkeypatch, bad):
    from histocurate.errors import UserInputError

    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(1, slide="list"))
    b.config.cytomine.annotators = []
    with pytest.raises(UserInputError, match=r"listed twice|no annotators"):
        b.export(unique(), annotators=[a for a in bad.split(",") if a])


def test_a_forbidden_user_list_falls_back_to_the_project_members(sandbox, tmp_path, monkeypatch):
    """Where the server refuses the user list (HTTP 403), annotators are found among the
    members of the campaign's existing project; with no project yet, the error says so."""
    from histocurate.demo.sandbox import routes
    from histocurate.demo.sandbox.db import Forbidden

    def forbidden(r):
        raise Forbidden(f"User {r.me['username']} may not list users")

    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(1, slide="forbid"))
    name = unique("forbid")
    assert b.export(name, annotators=["alice", "bob"]).exit_code == 0  # the list allowed
    server = sandbox.server
    patched = [(v, p, forbidden if h is routes.users else h) for v, p, h in server.routes]
    monkeypatch.setattr(server, "routes", patched)
    again = b.export(name, annotators=["alice", "bob"])
    assert again.exit_code == 0, again.failure_lines()
    message = _one_line(b.export(name, annotators=["alice", "carol"]))
    assert "'carol' do not exist among the members of the campaign's project(s)" in message
    assert "user list is forbidden" in message
    message = _one_line(b.export(unique("forbid"), annotators=["alice"]))
    assert "does not let 'histocurate-admin' list the users (HTTP 403)" in message
    assert "no project yet" in message
    keys = [k for pair in sandbox.keys.values() for k in pair]
    assert not any(k in message for k in keys)


def _one_line(run) -> str:
    assert run.exit_code == 2, run.failure_lines()
    [failed] = run.failed
    assert "\n" not in (failed.error or "")
    return failed.error or ""
