"""A ready-to-use sandbox for demos and tests: server + admin-created users + keys.

>>> with running_sandbox(["alice", "bob"]) as sandbox:   # doctest: +SKIP
...     creds = sandbox.credentials()                   # the admin's, for export/import
...     annotate(sandbox, project="demo", truth=truth)  # simulated pathologists
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from histocurate.cytomine.credentials import ENV_HOST, ENV_PRIVATE, ENV_PUBLIC, Credentials
from histocurate.cytomine.retry import RetryPolicy
from histocurate.demo.pathologists import SimulationResult, annotate_project
from histocurate.demo.profiles import DEFAULT_PROFILES, AnnotatorProfile, default_profiles
from histocurate.demo.sandbox import (
    FaultInjector,
    SandboxDB,
    SandboxHTTPServer,
    serve_in_thread,
)

ADMIN = "histocurate-admin"


@dataclass
class SandboxCampaign:
    """A running sandbox: where it is and every user's (public, private) keys."""

    host: str
    keys: dict[str, tuple[str, str]]
    admin: str
    server: SandboxHTTPServer

    @property
    def annotators(self) -> list[str]:
        return [u for u in self.keys if u != self.admin]

    def credentials(self, user: str | None = None) -> Credentials:
        public, private = self.keys[user or self.admin]
        return Credentials(self.host, public, private)

    def env(self, user: str | None = None) -> dict[str, str]:
        """``CYTOMINE_*`` variables for a subprocess or monkeypatched environment."""
        creds = self.credentials(user)
        return {ENV_HOST: creds.host, ENV_PUBLIC: creds.public_key, ENV_PRIVATE: creds.private_key}


@contextmanager
def running_sandbox(
    annotators: Sequence[str] | None = None,
    *,
    admin: str = ADMIN,
    db_path: str | Path = ":memory:",
    faults: FaultInjector | None = None,
    port: int = 0,
    server_version: str | None = None,
    import_delay_s: float = 0.0,
) -> Iterator[SandboxCampaign]:
    """Start a sandbox server on a free port in a background thread, with users created
    by the admin (default: the nine default pathologists), and stop it afterwards.

    ``server_version``: the server build it behaves as (default: the current release);
    ``import_delay_s``: how long PIMS takes to import an upload."""
    names = list(annotators) if annotators is not None else [p.username for p in DEFAULT_PROFILES]
    db = SandboxDB(db_path)
    existing = {u["username"] for u in db.list_users()}
    for name in [admin, *names]:
        if name not in existing:
            db.create_user(name, admin=name == admin)
    keys = db.user_keys([admin, *names])
    try:
        with serve_in_thread(
            db,
            port=port,
            faults=faults,
            server_version=server_version,
            import_delay_s=import_delay_s,
        ) as server:
            yield SandboxCampaign(server.host, keys, admin, server)
    finally:
        db.close()


def annotate(
    sandbox: SandboxCampaign,
    *,
    project: str,
    truth: pd.DataFrame,
    profiles: Sequence[AnnotatorProfile] | None = None,
    seed: int = 0,
    policy: RetryPolicy | None = None,
) -> SimulationResult:
    """Run the simulated annotation of ``project``: each annotator on their assigned tiles.

    ``truth``: tile_id, x, y, label in tile pixels (``histocurate.synth.truth_in_tiles``).
    Profiles default to the nine default habits, renamed to the sandbox's annotators.
    """
    chosen = list(profiles) if profiles is not None else default_profiles(sandbox.annotators)
    return annotate_project(
        sandbox.host,
        sandbox.keys,
        project=project,
        truth=truth,
        profiles=chosen,
        seed=seed,
        policy=policy,
    )
