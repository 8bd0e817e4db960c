"""The sandbox server (HMAC, JSON shapes, faults) and the client adapter's quirk handling."""

from __future__ import annotations

import logging
import socket
import sys

import pytest
import requests
from cytomine import Cytomine
from cytomine.models import Ontology, Project, ProjectCollection, TermCollection

from histocurate.cytomine.client import (
    CytomineAuthError,
    CytomineCallError,
    CytomineUnreachable,
    RetryPolicy,
    connect,
    remove_client_stdout_handler,
)
from histocurate.cytomine.credentials import Credentials, CredentialsError, resolve_credentials
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.rest import SignedSession
from histocurate.demo.sandbox import FaultInjector, SandboxDB, serve_in_thread, signature
from tests.cytomine_support import FAST, unique


def test_signature_is_the_client_scheme(sandbox):
    public, private = sandbox.keys["alice"]
    date = "Mon, 01 Jan 2024 00:00:00 +0000"
    from cytomine.cytomine import CytomineAuth

    prepared = requests.Request(
        "GET", f"{sandbox.host}/api/user/current.json", headers={"date": date}
    ).prepare()
    CytomineAuth(public, private, "", "")(prepared)
    assert prepared.headers["authorization"] == f"CYTOMINE {public}:" + signature(
        private, "GET", "", date
    )


def test_wrong_or_missing_key_gets_401(sandbox):
    public, _ = sandbox.keys["alice"]
    with pytest.raises(CytomineCallError) as info:
        SignedSession(sandbox.host, public, "not-the-key").request("GET", "/api/user/current.json")
    assert info.value.status == 401
    assert requests.get(f"{sandbox.host}/api/project.json", timeout=5).status_code == 401
    assert requests.get(f"{sandbox.host}/server/ping", timeout=5).status_code == 200


def test_real_client_shapes_and_conflicts(sandbox):
    with connect(sandbox.credentials(), FAST) as conn:
        assert conn.username == sandbox.admin
        onto = Ontology(unique("onto")).save()
        name = unique()
        project = Project(name, onto.id).save()
        assert project.id and project.ontology == onto.id
        assert name in [p.name for p in ProjectCollection().fetch()]
        assert len(TermCollection(filters={"project": project.id}).fetch()) == 0
        with pytest.raises(CytomineCallError) as info:
            conn.call("create duplicate", lambda: Project(name, onto.id).save())
        # the real server answers AlreadyExist with 400 and {"errors": {"message": ...}}
        assert info.value.status == 400 and not info.value.transient
        assert "already exist" in info.value.detail
        raw = conn.client.get("project.json", {"max": 1, "offset": 0})
        assert set(raw) >= {"collection", "size", "offset", "perPage", "totalPages"}
        assert len(raw["collection"]) == 1
        assert len(list_all(conn, "project.json")) == raw["size"]


def test_wrong_keys_fail_fast_without_leaking(sandbox):
    public, private = sandbox.keys["bob"]
    wrong = private[::-1]
    with (
        pytest.raises(CytomineAuthError) as info,
        connect(Credentials(sandbox.host, public, wrong), FAST),
    ):
        pass
    assert wrong not in str(info.value) and private not in str(info.value)
    assert "401" in str(info.value)


def test_server_down_is_a_clear_error_within_the_deadline():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = RetryPolicy(connect_deadline_s=1.0, connect_timeout_s=0.5, backoff_s=0.1)
    with (
        pytest.raises(CytomineUnreachable, match="waited up to 1 s"),
        connect(Credentials(f"http://127.0.0.1:{port}", "p", "secret-k"), policy),
    ):
        pass
    assert RetryPolicy().connect_deadline_s < 30  # the default gives up well within 30 s


def test_transient_faults_are_retried_and_hangs_time_out():
    db = SandboxDB()
    public, private = db.create_user("admin", admin=True)
    faults = FaultInjector(rate=0.0, hang_s=0.6, seed=3)
    policy = RetryPolicy(attempts=12, backoff_s=0.01, max_backoff_s=0.05, timeout_s=0.4)
    with serve_in_thread(db, faults=faults) as server:
        creds = Credentials(server.host, public, private)
        with connect(creds, policy) as conn:
            faults.rate = 0.5
            for _ in range(6):
                assert conn.call("list projects", lambda: ProjectCollection().fetch()) is not False
            faults.rate = 0.0
            assert conn.retries > 0
    summary = faults.summary()
    assert sum(v for k, v in summary.items() if k != "requests") > 0


def test_singleton_is_released_and_client_logging_silenced(sandbox):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    remove_client_stdout_handler()
    assert handler not in logging.getLogger().handlers
    with connect(sandbox.credentials(), FAST):
        assert Cytomine.get_instance() is not None
    with pytest.raises(ConnectionError):
        Cytomine.get_instance()


def test_credentials_from_environment_and_repr_hides_keys():
    env = {
        "CYTOMINE_HOST": "h",
        "CYTOMINE_PUBLIC_KEY": "pub",
        "CYTOMINE_PRIVATE_KEY": "priv-s3cret",
    }
    creds = resolve_credentials(environ=env)
    assert (creds.host, creds.public_key, creds.private_key) == ("h", "pub", "priv-s3cret")
    assert "priv-s3cret" not in repr(creds) and "priv-s3cret" not in str(creds)
    with pytest.raises(CredentialsError, match="CYTOMINE_PRIVATE_KEY"):
        resolve_credentials(environ={"CYTOMINE_HOST": "h", "CYTOMINE_PUBLIC_KEY": "p"})
    with pytest.raises(CredentialsError, match="CYTOMINE_HOST"):
        resolve_credentials(environ={})


def test_listings_need_a_project_or_image_and_terms_are_per_user(sandbox):
    from histocurate.cytomine.client import connect as connect_admin
    from histocurate.cytomine.projects import ensure_members, ensure_project, resolve_users

    admin = SignedSession(sandbox.host, *sandbox.keys[sandbox.admin], policy=FAST)
    with pytest.raises(CytomineCallError) as refused:
        admin.request("GET", "/api/annotation.json", params={"user": 1})
    assert refused.value.status == 400 and "a project, an image" in refused.value.detail
    with connect_admin(sandbox.credentials(), FAST) as conn:
        info, _ = ensure_project(conn, unique("terms"))
        ensure_members(conn, info.id, list(resolve_users(conn, ["alice"]).values()))
    db = sandbox.server.db
    uid = next(u["id"] for u in db.list_users() if u["username"] == "alice")
    made = db.add_upload(
        filename="t.png",
        size=1,
        width=8,
        height=8,
        mpp=0.25,
        storage_id=db.storages()[0]["id"],
        user_id=uid,
        projects=[info.id],
    )
    image = made["images"][0]["imageInstances"][0]["id"]
    alice = SignedSession(sandbox.host, *sandbox.keys["alice"], policy=FAST)
    lym, eos = info.term_by_label["lymphocyte"], info.term_by_label["eosinophil"]
    body = {"location": "POINT (1 1)", "image": image, "term": [lym]}
    aid = alice.request("POST", "/api/annotation.json", body=body)["annotation"]["id"]
    admin.request("POST", f"/api/annotation/{aid}/term/{eos}.json", body={})
    with pytest.raises(CytomineCallError) as not_mine:  # only the caller's own term goes
        admin.request("DELETE", f"/api/annotation/{aid}/term/{lym}.json")
    assert not_mine.value.status == 404
    listed = admin.get("/api/annotation.json", image=image)["collection"]
    assert set(listed[0]) >= {"id", "term", "userByTerm", "created", "user"}  # default groups
    by_term = {e["term"]: e["user"] for e in listed[0]["userByTerm"]}
    admin_id = next(u["id"] for u in db.list_users() if u["username"] == sandbox.admin)
    assert by_term == {lym: [uid], eos: [admin_id]}
    assert isinstance(listed[0]["created"], int) and isinstance(listed[0]["updated"], int)
    one = admin.get(f"/api/annotation/{aid}.json")  # the domain object: times as strings
    assert one["created"] == str(listed[0]["created"])
    terms = admin.get(f"/api/ontology/{info.ontology_id}/term.json")["collection"]
    assert all(t["ontologyId"] == info.ontology_id and "ontology" not in t for t in terms)


def test_terms_of_builds_before_the_repository_service_name_their_ontology():
    db = SandboxDB()
    public, private = db.create_user("admin", admin=True)
    admin_id = db.user_by_public_key(public)["id"]  # type: ignore[index]
    onto = db.create_ontology("older", admin_id)
    db.create_term({"name": "Lymphocyte", "ontology": onto["id"], "color": "#000000"})
    with serve_in_thread(db, server_version="2025-12") as server:
        session = SignedSession(server.host, public, private, policy=FAST)
        [term] = session.collection(f"/api/ontology/{onto['id']}/term.json")
    assert term["ontology"] == onto["id"] and "ontologyId" not in term


class _PagedListing:
    """A connection whose annotation listing answers 2 items a page (of 5), as a server
    that pages whatever ``max`` says would."""

    def __init__(self) -> None:
        self.items = [
            {"id": i, "location": "POINT (1 1)", "term": [7], "image": 11} for i in range(5)
        ]
        self.calls: list[dict] = []

    def get(self, path: str, what: str | None = None, **params):
        self.calls.append(params)
        start = int(params.get("offset", 0))
        return {"collection": self.items[start : start + 2], "size": len(self.items)}


def test_annotation_listings_are_read_whole():
    from histocurate.cytomine.fetch import _listing
    from histocurate.cytomine.push import _existing

    conn = _PagedListing()
    assert [a["id"] for a in _listing(conn, 5, 11, reviewed=False)] == list(range(5))
    assert len(conn.calls) == 3 and conn.calls[0]["project"] == 5
    assert [a["id"] for a in _existing(_PagedListing(), 5, 11, 2)] == list(range(5))
