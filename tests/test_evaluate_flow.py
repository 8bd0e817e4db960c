"""The evaluate Prefect flows: same table as the library, written file, artifacts; the model
evaluation (evaluate-models) gives the plain run's numbers and attaches Figure 3a."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_schema import EVALUATION, INSTANCES
from histocurate.config import load_config
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


@pytest.fixture
def model_eval_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small masks dataset (4 slides of one 120 px tile, LUAD and COAD) and a checkpoint
    that loads as the `OracleModel` (its dark blobs are the synthetic nuclei)."""
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.synthetic import SyntheticTile, write_campaign
    from histocurate.predict import dataset as dataset_module
    from histocurate.predict import evaluate as evaluate_module
    from histocurate.testing.predict_data import oracle_loader

    root = tmp_path / "ws"
    tiles = [SyntheticTile(f"s{s}_t0", f"s{s}", indication="LUAD" if s < 2 else "COAD",
                           side=120, seed=10 * s, spacing=60.0,
                           labels=["cancer_cell", "lymphocyte", "fibroblast", "cancer_cell"])
             for s in range(4)]  # fmt: skip
    write_campaign(root, tiles, project="camp")
    build = run_dataset_build(
        load_config(root, {"dataset": {"source": "masks", "folds": 2}}, environ={}), name="ds"
    )
    assert not build.failed
    (root / "oracle.pt").write_bytes(b"the oracle loader reads no weights")
    load = oracle_loader(classes=("cancer_cell", "lymphocyte", "fibroblast"), tile_size=112)
    monkeypatch.setattr(dataset_module, "load_model", load)
    monkeypatch.setattr(evaluate_module, "load_model", load)
    return root


@pytest.mark.prefect
def test_evaluate_models_flow_matches_the_plain_run(
    model_eval_ws: Path, prefect_harness: None
) -> None:
    """The model evaluation under Prefect: the numbers of the plain run on the same
    workspace, its overrides taking effect, the report with Figure 3a inline."""
    from prefect.artifacts import Artifact

    from flows._stage import run_flow
    from flows.predict import evaluate_models_flow
    from histocurate.predict.evaluate import run_model_evaluation

    ws = model_eval_ws
    overrides = {"evaluate": {"bootstrap": 20, "iou_threshold": 0.75},
                 "predict": {"workers": 0, "batch_size": 4}}  # fmt: skip
    run = run_flow(evaluate_models_flow, workspace=str(ws), models=[str(ws / "oracle.pt")],
                   dataset="ds", overrides=overrides)  # fmt: skip
    assert not run.failed and run.models == ["oracle"]
    assert [o.status for o in run.outcomes] == ["done"]  # predicted the dataset's tiles
    plain = run_model_evaluation(load_config(ws, overrides, environ={}),
                                 models=[str(ws / "oracle.pt")], dataset="ds")  # fmt: skip
    assert [o.status for o in plain.outcomes] == ["skipped"]  # the flow's prediction, reused
    assert set(run.evaluations) == set(plain.evaluations) == {"All", "COAD", "LUAD"}
    for group, ev in run.evaluations.items():
        pd.testing.assert_frame_equal(ev.table, plain.evaluations[group].table)
    pq = ev.table[(ev.table.metric == "pq") & ev.table.cell_type.isna()]["value"].iloc[0]
    assert pq > 0.6
    assert run.options is not None and run.options.iou_threshold == 0.75
    assert run.out is not None and (run.out / "figure3a.png").is_file()

    report = Artifact.get("model-evaluation-report")
    assert report is not None
    text = str(report.data)
    assert "**figure3a**" in text and "data:image/jpeg;base64," in text  # Figure 3a inline
    assert "IoU > 0.75" in text and "Table 2" in text
    table2 = Artifact.get(
        "model-evaluation-table-2-detection-segmentation-and-classification-per-indication"
    )
    assert table2 is not None and "oracle" in str(table2.data)
