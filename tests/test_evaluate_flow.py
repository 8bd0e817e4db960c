"""The evaluate Prefect flow: same table as the library, written file, artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_schema import EVALUATION, INSTANCES
from histocurate.io import read_table, write_table
from histocurate.testing.metrics_data import synthetic_prediction, synthetic_truth


@pytest.mark.prefect
def test_evaluate_flow_writes_table_and_artifacts(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.artifacts import Artifact

    from flows.evaluate import evaluate_flow

    truth = synthetic_truth(n_tiles=3, nuclei_per_tile=20, tile_size=96, seed=0)
    pred = synthetic_prediction(truth, tile_size=96, seed=1)
    truth.to_parquet(tmp_path / "truth.parquet")
    cols = ["tile_id", "x", "y", "polygon", "label"]
    write_table(pred[cols], tmp_path / "pred.parquet", INSTANCES)
    out = tmp_path / "metrics.parquet"
    result = evaluate_flow(
        str(tmp_path / "truth.parquet"), [str(tmp_path / "pred.parquet")], n_boot=20, out=str(out)
    )
    table = read_table(out, EVALUATION)
    assert result.evaluation is not None
    assert len(table) == len(result.evaluation.table) == 4 + 13 * 3
    assert Artifact.get("evaluation-report") is not None
    assert Artifact.get("evaluation-detection-and-segmentation-all-nuclei") is not None
