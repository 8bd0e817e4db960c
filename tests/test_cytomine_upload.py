"""Uploads through PIMS: asynchronous import followed to the end, an answer lost while PIMS
imports never makes a second upload, PIMS's list-shaped errors fail one tile (the export
goes on and a re-run uploads only it), and the upload route is found per server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from histocurate.cytomine.client import connect
from histocurate.cytomine.images import ProjectImages, own_storage
from histocurate.cytomine.projects import project_info
from histocurate.cytomine.retry import CytomineCallError
from histocurate.cytomine.upload import UploadFailed, post_upload, upload_tile
from histocurate.demo.annotation import running_sandbox
from histocurate.demo.sandbox import PROFILES, FaultInjector, ServerProfile, pims
from histocurate.demo.sandbox.faults import Fault
from tests.cytomine_support import ANNOTATORS, FAST, bench, make_tiles


def _uploads(sandbox) -> list[str]:
    db = sandbox.server.db
    with db.lock:
        return sorted(r[0] for r in db._all("SELECT original_filename FROM uploaded_files"))


def test_a_slow_asynchronous_import_is_followed_to_the_end(tmp_path, monkeypatch):
    with running_sandbox(ANNOTATORS, import_delay_s=0.4) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(2, slide="slow"))
        run = b.export("slow")
        assert run.exit_code == 0 and [o.extra["image"] for o in run.outcomes] == ["uploaded"] * 2
        assert _uploads(sandbox) == sorted(f"{t}.png" for t in b.tiles.tile_id)


@dataclass
class _LoseUploadAnswer(FaultInjector):
    """The first upload is stored, then its answer is lost (``kind``: drop or hang)."""

    kind: str = "drop"
    done: bool = False

    def draw(self, path: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            if path.endswith("/upload") and not self.done:
                self.done = True
                self.counts[f"{self.kind}-after"] += 1
                return Fault(self.kind, after=True)
            return None


@pytest.mark.parametrize("kind", ["drop", "hang"])
def test_a_lost_upload_answer_never_uploads_twice(kind, tmp_path, monkeypatch):
    faults = _LoseUploadAnswer(kind=kind, hang_s=1.5)
    with running_sandbox(ANNOTATORS, faults=faults, import_delay_s=0.3) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(2, slide=f"lost{kind}"), timeout_s=0.8)
        run = b.export("lost")
        assert faults.done and run.exit_code == 0, run.failure_lines()
        assert run.retries >= 1
        assert _uploads(sandbox) == sorted(f"{t}.png" for t in b.tiles.tile_id)
        with sandbox.server.db.lock:
            assert sandbox.server.db._one("SELECT COUNT(*) FROM image_instances")[0] == 2


def test_pims_errors_fail_one_tile_and_a_rerun_uploads_only_it(tmp_path, monkeypatch):
    with running_sandbox(ANNOTATORS, import_delay_s=0.01) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(3, slide="pims"))
        bad = f"{b.tiles.tile_id[1]}.png"
        real = pims.Importer.run

        def broken(self, uf, data, properties):
            if sandbox.server.db.uploaded_file(uf)["originalFilename"] == bad:
                return real(self, uf, b"not a png", properties)
            return real(self, uf, data, properties)

        monkeypatch.setattr(pims.Importer, "run", broken)
        run = b.export("pims")
        failed = {o.item: o.error or "" for o in run.failed}
        assert list(failed) == [b.tiles.tile_id[1]] and run.exit_code == 1
        assert "PIMS could not import it" in failed[b.tiles.tile_id[1]]
        assert "ERROR_FORMAT" in failed[b.tiles.tile_id[1]]
        assert "re-run `histocurate export --project pims`" in run.report().warnings[-1]
        assert len(run.done) == 2
        monkeypatch.setattr(pims.Importer, "run", real)
        again = b.export("pims")
        assert again.exit_code == 0
        assert [o.extra["image"] for o in again.outcomes] == ["present", "uploaded", "present"]
        assert _uploads(sandbox).count(bad) == 2  # the failed upload, and the one retry

        with connect(sandbox.credentials("alice"), FAST) as conn:  # a user, not an admin
            info = project_info(conn, "pims")
            other = next(
                s["id"] for s in sandbox.server.db.storages() if s["userId"] != conn.user_id
            )
            params = {"storage": other, "projects": info.id, "sync": "false"}
            with pytest.raises(CytomineCallError) as refused:  # PIMS: 400, a JSON list body
                post_upload(
                    conn, b.workspace.campaign("pims").image_path(b.tiles.tile_id[0]), params
                )
            assert refused.value.status == 400 and "cannot write to storage" in str(refused.value)
            damaged = tmp_path / "damaged.png"
            damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
            images = ProjectImages.read(conn, info.id)
            with pytest.raises(UploadFailed, match=r"damaged\.png: PIMS could not import it"):
                upload_tile(conn, images, damaged, storage_id=own_storage(conn), properties={})


def test_the_upload_route_is_found_or_named(tmp_path, monkeypatch):
    only_old = ServerProfile(
        "upload-only", "a proxy with the /upload retro route only", upload_routes=("/upload",)
    )
    monkeypatch.setitem(PROFILES, only_old.name, only_old)
    with running_sandbox(ANNOTATORS, server_version="upload-only") as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(1, slide="route"))
        assert b.export("route").exit_code == 0  # /ims/upload is not there: /upload is
        missing = bench(
            sandbox,
            tmp_path / "2",
            monkeypatch,
            make_tiles(2, slide="noroute"),
            upload_url=f"{sandbox.host}/nowhere/upload",
        )
        run = missing.export("route")
        errors = [o.error or "" for o in run.failed]
        assert len(errors) == 2 and "set [cytomine] upload_url" in errors[0]
        assert "not attempted" in errors[1]  # the server, not the tile: stop there


@pytest.mark.parametrize(
    ("code", "named"), [(61, "ERROR_INTEGRITY"), (51, "ERROR_UNPACKING"), (77, "unknown status")]
)
def test_any_status_neither_in_progress_nor_deployed_fails_the_tile(
    code, named, tmp_path, monkeypatch
):
    """PIMS's error statuses are a stage's code + 1 (and 41 for the unexpected); a status
    histocurate does not know as a stage in progress fails the tile too, and a re-run
    retries it."""
    with running_sandbox(ANNOTATORS, import_delay_s=0.01) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(2, slide=f"st{code}"))
        bad = f"{b.tiles.tile_id[0]}.png"
        real = pims.Importer.run

        def failing(self, uf, data, properties):
            if sandbox.server.db.uploaded_file(uf)["originalFilename"] == bad:
                self.db.fail_upload(uf, code)
                return None
            return real(self, uf, data, properties)

        monkeypatch.setattr(pims.Importer, "run", failing)
        run = b.export("status")
        failed = {o.item: o.error or "" for o in run.failed}
        assert list(failed) == [b.tiles.tile_id[0]] and len(run.done) == 1
        assert f"status {code} " in failed[bad[:-4]] and named in failed[bad[:-4]]
        assert "re-run export to retry this tile" in failed[bad[:-4]]
        monkeypatch.setattr(pims.Importer, "run", real)
        again = b.export("status")
        assert again.exit_code == 0
        assert [o.extra["image"] for o in again.outcomes] == ["uploaded", "present"]


def test_a_pims_400_inside_a_full_export_fails_that_tile_only(tmp_path, monkeypatch):
    """PIMS refuses one file with HTTP 400 and a JSON list body: that tile fails with
    PIMS's message (not an exception's name), the others go on, the report names the tile
    to retry, and a re-run uploads only it."""
    with running_sandbox(ANNOTATORS, import_delay_s=0.01) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(3, slide="p400"))
        bad = b.tiles.tile_id[1]
        real = pims.upload

        def refusing(r):
            name, _ = pims._file(r)
            if name == f"{bad}.png":
                raise pims.PimsError(500, f"{name}: conversion exploded")
            return real(r)

        monkeypatch.setattr(sandbox.server, "upload_handler", refusing)
        run = b.export("p400")
        failed = {o.item: o.error or "" for o in run.failed}
        assert list(failed) == [bad] and len(run.done) == 2 and run.exit_code == 1
        assert failed[bad].startswith(f"{bad}.png: PIMS refused it (HTTP 400)")
        assert "conversion exploded" in failed[bad] and "UploadFailed" not in failed[bad]
        assert bad in run.report().warnings[-1] and "re-run" in run.report().warnings[-1]
        monkeypatch.setattr(sandbox.server, "upload_handler", real)
        again = b.export("p400")
        assert [o.extra["image"] for o in again.outcomes] == ["present", "uploaded", "present"]
        assert _uploads(sandbox).count(f"{bad}.png") == 1  # the refused one stored nothing


def test_an_import_slower_than_upload_wait_is_resumed_by_a_rerun(tmp_path, monkeypatch):
    with running_sandbox(ANNOTATORS, import_delay_s=1.5) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, make_tiles(1, slide="wait"), upload_wait_s=0.3)
        first = b.export("wait")
        [failed] = first.failed
        assert "PIMS is still importing it" in (failed.error or "")
        assert "after 0.3 s" in (failed.error or "") and "will not upload again" in failed.error
        b.config.cytomine.upload_wait_s = 20.0
        again = b.export("wait")
        assert again.exit_code == 0, again.failure_lines()
        assert [o.extra["image"] for o in again.outcomes] == ["resumed"]
        assert _uploads(sandbox) == [f"{b.tiles.tile_id[0]}.png"]  # uploaded once
        with sandbox.server.db.lock:
            assert sandbox.server.db._one("SELECT COUNT(*) FROM image_instances")[0] == 1
