"""Training through its Prefect flow (a task per fold; a torchrun launch with nproc 2) and
under ``torchrun --nproc-per-node 2 -m histocurate train`` (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from histocurate.cellvit.rundir import read_state
from tests.test_train_stage import FAST, built, one_thread

__all__ = ["built", "one_thread"]  # the fixtures, shared
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.prefect
def test_flow_trains_a_fold_and_publishes_the_report(
    built: Path, tmp_path: Path, prefect_harness: None
) -> None:
    from prefect.artifacts import Artifact

    from flows._stage import run_flow
    from flows.train import train_flow

    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    run = run_flow(
        train_flow,
        workspace=str(ws),
        dataset="syn",
        fold=1,
        preset="tiny",
        epochs=1,
        batch_size=4,
        device="cpu",
        run="flowed",
    )
    assert run.exit_code == 0 and [o.item for o in run.outcomes] == ["fold 1"]
    assert (ws / "runs" / "flowed" / "best.pt").is_file()
    report = Artifact.get("train-report")
    assert report is not None
    text = str(getattr(report, "data", ""))
    assert "validation flowed" in text and "data:image/jpeg;base64," in text
    assert Artifact.get("train-per-class-f1-last-validation") is not None


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(built: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "histocurate",
        "train",
        "-w",
        str(ws),
        "--dataset",
        "syn",
        "--fold",
        "2",
        *FAST,
        "--run-name",
        "ddp",
        "--no-prefect",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env=_env(), timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((ws / "runs" / "ddp" / "config.json").read_text())
    assert record["world_size"] == 2 and record["device"] == "cpu"
    state = read_state(ws / "runs" / "ddp" / "last.pt")["training"]
    assert state["epoch"] == 1 and state["world_size"] == 2
    assert "run folder:" in done.stdout  # rank 0 printed the report, once
    assert done.stdout.count("run folder:") == 1


@pytest.mark.slow
@pytest.mark.prefect
def test_flow_launches_torchrun_and_reads_the_runs_back(
    built: Path, tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows._stage import run_flow
    from flows.train import train_flow

    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = run_flow(
        train_flow,
        workspace=str(ws),
        dataset="syn",
        fold=0,
        preset="tiny",
        epochs=1,
        batch_size=4,
        device="cpu",
        run="launched",
        nproc=2,
    )
    assert run.exit_code == 0, run.failure_lines()
    (outcome,) = run.outcomes
    assert outcome.item == "fold 0" and outcome.extra["epochs"] == 1
    assert outcome.extra["validation"] is not None
