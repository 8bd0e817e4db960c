"""`histocurate demo`, the README's main job, end to end on a small synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_schema import EVALUATION, SELECTION
from histocurate.cli.app import main
from histocurate.io import read_table
from histocurate.workspace import Workspace

# a smaller cohort than the default (16 slides of 4096 px), to keep the suite fast
SMALL_COHORT = {
    'indications = ["LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"]':
        'indications = ["LUAD", "COAD"]',
    "width_px = 4096": "width_px = 2560",
    "height_px = 4096": "height_px = 2560",
}  # fmt: skip


def test_demo_runs_end_to_end_resumes_and_stops_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"
    assert main(["init", str(root)]) == 0
    config = root / "histocurate.toml"
    text = config.read_text()
    for default, small in SMALL_COHORT.items():
        assert default in text
        text = text.replace(default, small)
    config.write_text(text)
    args = ["--n-tiles", "4", "--n-uncertain", "4", "--train-minutes", "0.2", "--no-prefect"]
    assert main(["demo", str(root), *args]) == 0
    out = capsys.readouterr().out
    workspace = Workspace(root)
    selected = read_table(workspace.selection, SELECTION)
    assert set(selected["indication"]) == {"LUAD", "COAD"}  # validation and training rounds
    assert (selected["indication"] == "LUAD").sum() >= 4
    # a validation dataset from the consensus, a training one from single-annotator masks
    for name in ("demo-val", "demo-train"):
        versions = [p for p in (workspace.datasets / name).iterdir() if p.is_dir()]
        assert len(versions) == 1 and (versions[0] / "dataset.json").is_file(), name
    # a tiny CellViT trained on the training set, run on the validation tiles and on the
    # LUAD slides, whose cells are the presence labels of a second selection round
    assert (root / "runs" / "demo-tiny" / "best.pt").is_file()
    assert (root / "predictions" / "demo-tiny" / "cells.parquet").is_dir()
    assert "round 1 (truth labels)" in out and "round 2 (model labels)" in out
    metrics = read_table(workspace.evaluation, EVALUATION)
    overall = metrics[(metrics["kind"] == "value") & metrics["cell_type"].isna()]
    pq = float(overall.loc[overall["metric"] == "pq", "value"].iloc[0])
    assert 0.6 < pq <= 1.0  # consensus of 3 simulated pathologists vs the truth
    assert (root / "reports" / "select" / "LUAD" / "mosaic.png").is_file()

    assert main(["demo", str(root), *args]) == 0  # resumes
    assert "skipped" in capsys.readouterr().out

    # a step that fails stops the demo with its exit code and says where, no traceback
    code = main(["demo", str(root), "--indication", "BRCA", "--no-prefect"])
    out = capsys.readouterr()
    assert code == 2
    assert "demo stopped at step 'select'" in " ".join(out.out.split())
    assert "BRCA" in out.err and "Traceback" not in out.out + out.err
    # a segmenter that cannot run is refused before any step
    code = main(["demo", str(root), "--segmenter", "nuclick", "--no-prefect"])
    out = capsys.readouterr()
    assert code == 2 and "--checkpoint" in out.err and "histocurate synth" not in out.out
