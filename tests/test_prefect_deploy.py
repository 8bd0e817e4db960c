"""prefect.yaml as a data engineer uses it, on the test server: `prefect deploy` refuses to
deploy without its two variables (one message, no traceback); without HISTOCURATE_CHECKPOINT
the nightly predict is deployed with its schedule inactive; with them, a process worker
runs the tile deployment end to end; the server refuses a bad parameter before any run; a
stage error names the deployment's parameter, not the CLI flag. Slow (~2.5 min: each
deployment run starts a process): marked slow and prefect."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from histocurate.cli.app import main
from tests.slide_files import tissue_image, write_slide

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _environment(home: Path, **extra: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOCURATE_")}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_HOME=str(home), **extra)
    return env


def _deploy(env: dict[str, str], *names: str) -> subprocess.CompletedProcess[str]:
    args = [a for n in names for a in ("-n", n)]
    return subprocess.run([PREFECT, "--no-prompt", "deploy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def _final_state(client: Any, run_id: Any, timeout_s: float = 150) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} not finished after {timeout_s} s")


@pytest.mark.prefect
@pytest.mark.slow
def test_deploy_and_run_deployments_end_to_end(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from data_schema import TILES
    from histocurate.config import load_config
    from histocurate.features.stage import run_embed
    from histocurate.io import read_table

    ws = tmp_path / "deploy-ws"
    assert main(["init", str(ws)]) == 0
    write_slide(ws / "a.tiff", tissue_image(2048, 2048, seed=1), mpp=0.25)
    (ws / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\n")
    home = tmp_path / "prefect-home"

    with get_client(sync_client=True) as client:
        for pool in ("histocurate", "histocurate-gpu"):
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    refused = _deploy(_environment(home), "tile")
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "not deployed: prefect.yaml needs HISTOCURATE_REPO and HISTOCURATE_WORKSPACE" in said
    assert "Traceback" not in said  # one message, not buried in a traceback
    env = _environment(home, HISTOCURATE_REPO=str(ROOT), HISTOCURATE_WORKSPACE=str(ws))
    deployed = _deploy(env, "tile", "select-luad", "predict-new-slides-nightly")
    said = deployed.stdout + deployed.stderr
    assert deployed.returncode == 0, said[-4000:]
    assert "HISTOCURATE_CHECKPOINT is not set" in said and "INACTIVE" in said

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "histocurate"], cwd=tmp_path, env=env, **quiet
    )
    try:
        with get_client(sync_client=True) as client:
            tile = client.read_deployment_by_name("tile/tile")
            select = client.read_deployment_by_name("select/select-luad")
            nightly = client.read_deployment_by_name(
                "predict-new-slides/predict-new-slides-nightly"
            )
            assert [s.active for s in nightly.schedules] == [False]  # no model: not scheduled
            with pytest.raises(Exception, match="n_tiles"):  # refused before any run
                client.create_flow_run_from_deployment(select.id, parameters={"n_tiles": 0})
            run = client.create_flow_run_from_deployment(
                tile.id, parameters={"tissue_threshold": 0.9}
            )
            done = _final_state(client, run.id)
            assert done.state.is_completed(), done.state.message
            assert done.name.startswith("tile · deploy-ws · ")
            assert {"histocurate", "stage:tile", "workspace:deploy-ws"} <= set(done.tags)
            tiles = read_table(ws / "tiles.parquet", TILES)
            assert len(tiles) >= 1 and (tiles["tissue_fraction"] >= 0.9).all()

            run_embed(load_config(ws, {"features": {"num_workers": 0}}))
            run = client.create_flow_run_from_deployment(select.id, parameters={"n_tiles": 500})
            failed = _final_state(client, run.id)
            assert failed.state.is_failed()
            message = failed.state.message or ""
            assert "lower parameter 'n_tiles'" in message and "--n-tiles" not in message
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.terminate()
            worker.wait(timeout=20)
