"""The shared flow layer in real Prefect runs (one shared test server): failures that show
and are announced, readable names and tags, tasks bounded, retried only when transient,
histocurate's log records in the run's logs, progress artifacts."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from histocurate.cli.app import main
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome, ItemWork
from tests.slide_files import tissue_image, write_slide

_attempts: dict[str, int] = {}
_running = {"now": 0, "most": 0}
_lock = threading.Lock()


def _probe(item: str) -> ItemOutcome:
    """A task that fails once transiently ("flaky"), always on its input ("input")."""
    with _lock:
        _attempts[item] = _attempts.get(item, 0) + 1
        _running["now"] += 1
        _running["most"] = max(_running["most"], _running["now"])
    try:
        logging.getLogger("histocurate.probe").info("working on %s", item)
        time.sleep(0.3)
        if item == "flaky" and _attempts[item] == 1:
            raise ConnectionResetError("connection reset by peer")
        if item == "input":
            raise UserInputError(f"{item}: bad value, lower --n-tiles")
        return ItemOutcome(item, "done", count=1)
    finally:
        with _lock:
            _running["now"] -= 1


def _probe_flow_fn(workspace: str) -> list[ItemOutcome]:
    from flows._stage import stage_run

    overrides = {"prefect": {"task_workers": 2, "retry_delay_s": 0}}
    with stage_run("probe", workspace, overrides) as stage:
        work = ItemWork(_probe, str, "probe")
        return list(stage.mapper(work, ["flaky", "input", "a", "b", "c"]))


def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))


@pytest.fixture
def logs_to_api() -> Iterator[None]:
    """Send this test's run logs to the test server (the suite turns that off)."""
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: True}):
        yield


def _run_logs(flow_run_id: Any, *, expect: str) -> list[tuple[int, str, Any]]:
    """The logs of a flow run and its tasks, as the UI shows them (waits for ``expect``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter

    found: list[tuple[int, str, Any]] = []
    for _ in range(50):
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id={"any_": [flow_run_id]}))
        found = [(log.level, log.message, log.task_run_id) for log in logs]
        if any(expect in message for _, message, _ in found):
            break
        time.sleep(0.2)
    return found


@pytest.mark.prefect
def test_tasks_are_bounded_named_retried_only_when_transient_and_logged(
    tmp_path: Path, prefect_harness: None, logs_to_api: None
) -> None:
    from flows._stage import stage_flow

    assert main(["init", str(tmp_path / "ws")]) == 0
    probe_flow = stage_flow("probe")(_probe_flow_fn)
    state = probe_flow(str(tmp_path / "ws"), return_state=True)
    outcomes = {o.item: o for o in state.result()}
    assert {k: o.status for k, o in outcomes.items()} == {
        "flaky": "done", "input": "failed", "a": "done", "b": "done", "c": "done"
    }  # fmt: skip
    assert outcomes["input"].input_error and "--n-tiles" in (outcomes["input"].error or "")
    assert _attempts["flaky"] == 2 and _attempts["input"] == 1  # input errors: never retried
    assert _running["most"] <= 2  # [prefect] task_workers
    runs = {r.name: r for r in _task_runs(state.state_details.flow_run_id)}
    assert set(runs) == {"probe-flaky", "probe-input", "probe-a", "probe-b", "probe-c"}
    assert runs["probe-flaky"].run_count == 2 and runs["probe-input"].run_count == 1
    assert set(runs["probe-a"].tags) >= {"histocurate-probe", "stage:probe", "workspace:ws"}
    found = _run_logs(state.state_details.flow_run_id, expect="working on c")
    logs = [m for _, m, _ in found]
    assert "histocurate.probe: working on a" in logs  # histocurate's records, in the run's logs
    assert any(m.startswith("probe: 5 task(s), 2 at a time") for m in logs)
    of_tasks = [m for _, m, task in found if task is not None]
    assert "Finished in state Completed()" not in of_tasks  # per-task noise left out


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        _Hook.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.mark.prefect
def test_a_failed_stage_is_red_named_tagged_reported_and_announced(
    tmp_path: Path, prefect_harness: None, webhook: str, logs_to_api: None
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter
    from prefect.states import StateType

    from flows.pipeline import prepare_campaign_flow
    from flows.tile import tile_flow

    CustomWebhookNotificationBlock(
        name="test", url=webhook, json_data={"text": "{{body}}"}, allow_private_urls=True
    ).save("histocurate-test", overwrite=True)
    ws = tmp_path / "lab-ws"
    assert main(["init", str(ws)]) == 0
    toml = ws / "histocurate.toml"
    settings = '[prefect]\ntask_workers = 1\nnotify_block = "custom-webhook/histocurate-test"\n'
    toml.write_text(toml.read_text().replace("[prefect]\n", settings))
    for name in ("a", "b"):
        write_slide(ws / f"{name}.tiff", tissue_image(2048, 2048, seed=1), mpp=0.25)
    (ws / "bad.svs").write_text("not a slide")
    (ws / "slides.csv").write_text(
        "slide_id,path,indication\na,a.tiff,LUAD\nb,b.tiff,LUAD\nbad,bad.svs,LUAD\n"
    )
    state = tile_flow(str(ws), return_state=True)
    assert state.type == StateType.FAILED
    assert "1 item(s) failed: bad:" in (state.message or "")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.name.startswith("tile · lab-ws · ")
    assert {"histocurate", "stage:tile", "workspace:lab-ws"} <= set(run.tags)
    tasks = sorted(_task_runs(run.id), key=lambda r: r.start_time)
    assert {t.name for t in tasks} == {"tile-a", "tile-b", "tile-bad"}
    for earlier, later in itertools.pairwise(tasks):
        assert later.start_time >= earlier.end_time  # task_workers = 1: one after the other
    logs = _run_logs(run.id, expect="tile: 2 items done, 0 up to date, 1 failed")
    warned = [m for level, m, _ in logs if level == logging.WARNING]
    assert any(m.startswith("item failed: bad:") for m in warned)
    with get_client(sync_client=True) as client:
        mine = ArtifactFilter(flow_run_id={"any_": [run.id]})
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=mine)}
    assert float(artifacts["tile-progress"].data) == 100.0  # type: ignore[arg-type]
    assert "data:image/jpeg;base64," in str(artifacts["tile-report"].data)  # overlays inline
    assert _Hook.received and "tile failed" in _Hook.received[-1]["text"]
    assert "bad:" in _Hook.received[-1]["text"]

    # in a pipeline the failed stage stops it: the parent fails with the stage's message and
    # sends the one notice (the stage, now a subflow, only logs)
    notices = len(_Hook.received)
    parent = prepare_campaign_flow(str(ws), indication="LUAD", return_state=True)
    assert parent.is_failed()
    assert "stage tile failed, the pipeline stopped: 1 item(s) failed: bad:" in parent.message
    assert len(_Hook.received) == notices + 1
    assert "prepare-campaign failed" in _Hook.received[-1]["text"]
