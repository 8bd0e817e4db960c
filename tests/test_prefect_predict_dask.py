"""The predict flow on Dask (`predict_flow_on`, the embed flow's choice of task runner):
the same cells as on threads, each window's post-processing a job on the task runner's
cluster (no second cluster), the slide tasks in the flow's process, every client closed.

The `OracleModel` (dark blobs are nuclei) stands in for a trained CellViT; the clusters
run in this process (TCP, so that jobs and nuclei are pickled as on a real cluster).
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import distributed
import pandas as pd
import pytest

from data_schema import CELLS
from histocurate.config import load_config
from histocurate.io import read_table
from histocurate.predict import slide as slide_module
from histocurate.predict import stage as stage_module
from histocurate.predict.store import SlidePredictions
from histocurate.predict.worker import DaskExecutor, executor_for
from histocurate.testing.predict_data import oracle_loader
from tests.test_predict_dask import DISCS, disc_workspace

SETTINGS = {
    "tiling": {"tile_size_um": 56},
    "predict": {"window_um": 112, "margin_um": 8, "workers": 0, "batch_size": 4},
}
Opened = list[tuple[str | None, Executor]]  # (Dask address, executor) of each opened
# two threads: were a slide task sent to the worker, its windows would still find a thread
# (with one: a hang) and the test would fail on what the scheduler saw
IN_PROCESS = {"processes": False, "n_workers": 1, "threads_per_worker": 2, "protocol": "tcp",
              "host": "127.0.0.1", "dashboard_address": None}  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prefect_predict_dask") / "ws"
    return disc_workspace(root, lambda r: load_config(r, SETTINGS, environ={}))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    """The oracle for every model load; the post-processing executors the runs opened,
    with the Dask address each was given."""
    load = oracle_loader()
    monkeypatch.setattr(slide_module, "load_model", load)
    monkeypatch.setattr(stage_module, "load_model", load)
    made: Opened = []

    def recording(workers: int | None, dask_address: str | None = None) -> Executor:
        made.append((dask_address, executor_for(workers, dask_address)))
        return made[-1][1]

    monkeypatch.setattr(slide_module, "executor_for", recording)
    return made


@pytest.fixture
def slide_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads the slides were predicted on."""
    import threading

    seen: list[str] = []
    predict = stage_module.predict_slide

    def recording(slide_id: str, **kw: Any) -> Any:
        seen.append(threading.current_thread().name)
        return predict(slide_id, **kw)

    monkeypatch.setattr(stage_module, "predict_slide", recording)
    return seen


def predicted(flow: Any, ws: Path) -> pd.DataFrame:
    from flows._stage import run_flow

    run = run_flow(flow, workspace=str(ws), checkpoint="oracle.pt", overrides=SETTINGS,
                   force=True)  # fmt: skip
    assert [o.status for o in run.outcomes] == ["done"], run.failure_lines()
    return read_table(SlidePredictions(ws, "oracle").cells("d"), CELLS)


def clients(cluster: Any) -> set[str]:
    """The clients the scheduler holds, less its own (``fire-and-forget``)."""
    return set(cluster.scheduler.clients) - {"fire-and-forget"}


def only_postprocessing(cluster: Any) -> bool:
    """The scheduler saw post-processing jobs and nothing else (no slide task)."""
    return set(cluster.scheduler.task_prefixes) == {"postprocess_item"}


_PLAIN: dict[Path, pd.DataFrame] = {}  # the plain run's cells, once per workspace


@pytest.fixture
def cells_on_threads(
    ws: Path, prefect_harness: None, opened: Opened, slide_threads: list[str]
) -> pd.DataFrame:
    """The cells of the plain flow run (threads, in-process post-processing)."""
    from flows.predict import predict_flow, predict_flow_on

    if ws not in _PLAIN:
        assert predict_flow_on().task_runner == predict_flow.task_runner  # threads by default
        _PLAIN[ws] = predicted(predict_flow, ws)
        assert len(_PLAIN[ws]) == len(DISCS)
        assert [(a, type(e).__name__) for a, e in opened] == [(None, "InlineExecutor")]
        assert len(slide_threads) == 1 and slide_threads[0] != "MainThread"  # a task's
        opened.clear()
        slide_threads.clear()
    return _PLAIN[ws]


@pytest.mark.prefect
def test_on_a_scheduler_address_the_windows_go_there_and_the_slides_stay(
    cells_on_threads: pd.DataFrame, ws: Path, opened: Opened, slide_threads: list[str]
) -> None:
    from flows.predict import predict_flow_on

    with distributed.LocalCluster(**IN_PROCESS) as cluster:
        cells = predicted(predict_flow_on(dask_address=cluster.scheduler_address), ws)
        pd.testing.assert_frame_equal(cells, cells_on_threads)
        ((address, dask),) = opened
        assert address == cluster.scheduler_address
        assert isinstance(dask, DaskExecutor) and dask.client.status == "closed"
        assert only_postprocessing(cluster)
        assert not clients(cluster)  # the run's client and the task runner's: closed
    # the slide ran on a thread of this process, not a Dask worker's
    assert len(slide_threads) == 1 and not slide_threads[0].startswith("Dask-")
    assert not slide_module._EXECUTORS


@pytest.mark.prefect
def test_a_local_cluster_the_runner_starts_is_the_one_used(
    cells_on_threads: pd.DataFrame,
    ws: Path,
    opened: Opened,
    slide_threads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.predict import predict_flow_on

    started: list[Any] = []

    class InProcess(distributed.LocalCluster):
        """The runner's LocalCluster, its worker in this process (fast to start)."""

        def __init__(self, **kw: Any) -> None:
            super().__init__(**{**kw, **IN_PROCESS})
            started.append(self)

    monkeypatch.setattr(distributed, "LocalCluster", InProcess)
    cells = predicted(predict_flow_on(dask_workers=1), ws)
    pd.testing.assert_frame_equal(cells, cells_on_threads)
    (cluster,) = started  # the task runner's, and no other
    ((address, dask),) = opened
    assert address == cluster.scheduler_address
    assert isinstance(dask, DaskExecutor) and dask.client.status == "closed"
    assert only_postprocessing(cluster)
    assert cluster.status.name == "closed"  # the runner closed the cluster it started
    assert len(slide_threads) == 1 and not slide_threads[0].startswith("Dask-")
