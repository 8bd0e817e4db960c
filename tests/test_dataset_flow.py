"""The dataset stage through its Prefect flow: the same version as the plain run, the card
as the markdown artifact (with the class plot inline) and the class table."""

from __future__ import annotations

from pathlib import Path

import pytest

from histocurate.config import load_config
from histocurate.dataset.build import run_dataset_build
from tests.test_dataset_build import make_workspace


@pytest.mark.prefect
def test_flow_builds_what_the_plain_run_builds(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.artifacts import Artifact

    from flows._stage import run_flow
    from flows.dataset import dataset_flow

    for name in ("plain", "flow"):
        make_workspace(tmp_path / name)
    plain = run_dataset_build(
        load_config(tmp_path / "plain", environ={}), name="val", source="consensus"
    )
    flowed = run_flow(
        dataset_flow, workspace=str(tmp_path / "flow"), name="val", source="consensus"
    )
    assert flowed.status == "built" and flowed.version == plain.version
    assert flowed.info["content_hash"] == plain.info["content_hash"]
    assert [o.item for o in flowed.outcomes] == [o.item for o in plain.outcomes]
    report = Artifact.get("dataset-val-report")
    assert report is not None
    text = str(getattr(report, "data", ""))
    assert "# Dataset card: val@" in text and "data:image/jpeg;base64," in text
    assert Artifact.get("dataset-val-classes-per-fold") is not None
