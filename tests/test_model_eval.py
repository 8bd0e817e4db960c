"""Prediction on a dataset (stored beside it) and `evaluate --model ... --dataset ...`.

A small campaign dataset (6 slides, LUAD and COAD, 120 px tiles: not a multiple of the
patch, so the padding is exercised) is predicted by the `OracleModel` (its dark blobs are
the synthetic nuclei) and by a tiny random CellViT; the oracle must score high, the random
model low, and the paired p-value must say so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from data_schema import DATASET_NUCLEI, TILE_CELLS
from histocurate.cli.app import main
from histocurate.config import HistocurateConfig, load_config
from histocurate.dataset.build import run_dataset_build
from histocurate.dataset.store import datasets_root, resolve_dataset
from histocurate.dataset.synthetic import SyntheticTile, write_campaign
from histocurate.errors import UserInputError
from histocurate.io import read_provenance, read_table
from histocurate.metrics.evaluate import EvaluationOptions
from histocurate.predict import dataset as dataset_module
from histocurate.predict import evaluate as evaluate_module
from histocurate.predict.evaluate import _clean_labels, evaluate_groups, run_model_evaluation
from histocurate.predict.models import LoadedModel, load_model
from histocurate.predict.stage import run_predict
from histocurate.testing.predict_data import oracle_loader, tiny_checkpoint


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_eval") / "ws"
    tiles = [
        SyntheticTile(f"s{s}_t{t}", f"s{s}", indication="LUAD" if s < 3 else "COAD",
                      side=120, seed=10 * s + t, spacing=60.0,
                      labels=["cancer_cell", "lymphocyte", "fibroblast", "cancer_cell"])
        for s in range(6)
        for t in range(2)
    ]  # fmt: skip
    write_campaign(root, tiles, project="camp")
    cfg = load_config(root, {"dataset": {"source": "masks"}}, environ={})
    run = run_dataset_build(cfg, name="ds")
    assert not run.failed
    tiny_checkpoint(root / "runs" / "tiny" / "best.pt", train_config={"dataset": "ds", "fold": 1})
    tiny_checkpoint(root / "oracle.pt")
    return root


def config(ws: Path, **evaluate: object) -> HistocurateConfig:
    overrides = {"predict": {"workers": 0, "batch_size": 4}, "evaluate": evaluate}
    return load_config(ws, overrides, environ={})


def with_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """``oracle.pt`` loads as the `OracleModel`; other checkpoints load for real."""
    oracle_load = oracle_loader(
        classes=("cancer_cell", "lymphocyte", "fibroblast"), tile_size=112, digest="oracle-digest"
    )

    def load(path: Path, device: str = "auto") -> LoadedModel:
        return oracle_load(path, device) if path.name == "oracle.pt" else load_model(path, device)

    monkeypatch.setattr(dataset_module, "load_model", load)
    monkeypatch.setattr(evaluate_module, "load_model", load)


def test_dataset_prediction_is_stored_beside_it_and_resumes(ws: Path) -> None:
    cfg = config(ws)
    run = run_predict(cfg, checkpoint="tiny", dataset="ds")
    (outcome,) = run.outcomes
    version = resolve_dataset(datasets_root(ws), "ds")
    where = version.path / "predictions" / "tiny" / "cells.parquet"
    assert outcome.status == "done" and outcome.extra["tiles"] == 12 and run.dataset == version.spec
    assert run.report().outputs["cells"] == where
    cells = read_table(where, TILE_CELLS)
    assert len(cells) == outcome.count
    assert cells["x"].between(0, 120).all() and cells["y"].between(0, 120).all()
    assert read_provenance(where)["dataset"] == version.info()["content_hash"]
    assert [o.status for o in run_predict(cfg, checkpoint="tiny", dataset="ds").outcomes] == [
        "skipped"
    ]
    with pytest.raises(UserInputError, match="not both"):
        run_predict(cfg, checkpoint="tiny", dataset="ds", slides=["s0"])


def test_oracle_beats_random_model_per_indication_with_a_p_value(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_oracle(monkeypatch)
    run = run_model_evaluation(config(ws, bootstrap=200), models=[str(ws / "oracle.pt"), "tiny"],
                               dataset="ds", fold=None)  # fmt: skip
    assert not run.failed and run.models == ["oracle", "tiny"]
    assert set(run.evaluations) == {"All", "COAD", "LUAD"}
    for group, ev in run.evaluations.items():
        t = ev.table
        value = t[(t.kind == "value") & (t.metric == "pq") & t.cell_type.isna()]
        pq = dict(zip(value.prediction, value.value, strict=True))
        assert pq["oracle"] > 0.6, group
        assert math.isnan(pq["tiny"]) or pq["tiny"] < 0.2
        diff = t[(t.kind == "difference") & (t.metric == "dq") & t.cell_type.isna()].iloc[0]
        assert diff.value < -0.5 and diff.p_value < 0.05  # tiny - oracle
    report = run.report()
    table2 = report.tables[next(k for k in report.tables if k.startswith("Table 2"))]
    assert list(table2.columns[:4]) == ["Indication", "Metric", "oracle", "tiny"]
    assert "p-value" in table2.columns and len(table2) == 3 * 4
    per_class = report.tables["Per-class F1 (all tiles)"].set_index("Cell type")
    assert per_class.loc["Cancer cell", "Support"] > 0
    oracle_f1 = float(per_class.loc["Cancer cell", "oracle"].split()[0])  # all it calls cancer
    tiny_f1 = per_class.loc["Cancer cell", "tiny"]
    assert oracle_f1 > 0.1 and (tiny_f1 == "n/a" or float(tiny_f1.split()[0]) < oracle_f1)
    assert per_class.loc["Lymphocyte", "oracle"].startswith("0.000")
    assert run.out is not None and (run.out / "figure3a.png") in report.images
    for name in ("table2.csv", "f1_per_class.csv", "evaluation.csv", "report.md"):
        assert (run.out / name).exists()
    assert any("every tile" in n for n in run.notes)  # no fold given, none in the oracle


def test_the_held_out_fold_comes_from_the_checkpoint(ws: Path) -> None:
    run = run_model_evaluation(config(ws, bootstrap=20), models=["tiny"], dataset="ds")
    assert any("fold 1" in n for n in run.notes)
    ev = run.evaluations.get("All")
    tiles = pd.read_parquet(resolve_dataset(datasets_root(ws), "ds").tiles,
                            columns=["tile_id", "fold"])  # fmt: skip
    if ev is not None:
        assert set(ev.per_tile["tile_id"]) <= set(tiles.loc[tiles.fold == 1, "tile_id"])
    with pytest.raises(UserInputError, match="fold 7 is not a fold"):
        run_model_evaluation(config(ws, bootstrap=0), models=["tiny"], dataset="ds", fold=7)


def test_perfect_and_wrong_predictions() -> None:
    truth = pd.DataFrame({"tile_id": ["t1", "t1", "t2"], "x": [10.0, 30.0, 10.0],
                          "y": [10.0, 10.0, 10.0], "label": ["cancer_cell", None, "lymphocyte"],
                          "labels": [["cancer_cell"], ["fibroblast", "lymphocyte"],
                                     ["lymphocyte"]]})  # fmt: skip
    import shapely

    truth["polygon"] = [shapely.to_wkb(shapely.box(x - 4, y - 4, x + 4, y + 4))
                        for x, y in zip(truth.x, truth.y, strict=True)]  # fmt: skip
    perfect = truth.assign(label=["cancer_cell", "fibroblast", "lymphocyte"]).drop(columns="labels")
    wrong = perfect.assign(label=["lymphocyte", "cancer_cell", "cancer_cell"])
    tiles = pd.DataFrame({"tile_id": ["t1", "t2"], "indication": ["LUAD", "LUAD"]})
    options = EvaluationOptions(tile_size=64, n_boot=50, extra_tiles="empty", match="masks")
    out = evaluate_groups(truth, [("perfect", perfect), ("wrong", wrong)], tiles, options, [])
    t = out["All"].table
    values = t[t.kind == "value"].set_index(["prediction", "metric", "cell_type"])["value"]
    assert values.loc[("perfect", "pq", np.nan)] == pytest.approx(1.0)
    assert values.loc[("perfect", "f1", "fibroblast")] == 1.0  # one of the proposed labels
    assert values.loc[("wrong", "f1", "cancer_cell")] == 0.0
    assert list(out) == ["All"]  # one indication: no per-indication repeat


def test_labels_outside_the_types_are_named() -> None:
    notes: list[str] = []
    frame = pd.DataFrame(
        {
            "label": ["inflammatory", "cancer_cell", None],
            "labels": [["inflammatory"], ["cancer_cell"], ["dead", "lymphocyte"]],
        }
    )
    clean = _clean_labels(frame, "ds nuclei", notes)  # fmt: skip
    assert [v if isinstance(v, str) else None for v in clean["label"]] == [
        None,
        "cancer_cell",
        None,
    ]
    assert clean["labels"].tolist() == [[], ["cancer_cell"], ["lymphocyte"]]
    assert notes and "['dead', 'inflammatory']" in notes[0]


def test_cli_two_models_and_bad_use(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_oracle(monkeypatch)
    monkeypatch.setenv("HISTOCURATE_PREDICT__WORKERS", "0")
    args = ["evaluate", "--model", "tiny", "--model", str(ws / "oracle.pt"), "--dataset", "ds",
            "--bootstrap", "20", "-w", str(ws), "--no-prefect"]  # fmt: skip
    assert main(args) == 0
    assert main(["evaluate", "--model", "tiny", "-w", str(ws), "--no-prefect"]) == 2
    assert main(["evaluate", "-w", str(ws), "--no-prefect"]) == 2
    assert main(["evaluate", "--model", "nope", "--dataset", "ds", "-w", str(ws)]) == 2
    nuclei = read_table(resolve_dataset(datasets_root(ws), "ds").nuclei, DATASET_NUCLEI)
    assert len(nuclei) == 12 * 4


def test_cli_evaluation_options_take_effect(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--iou-threshold, --aggregate and --multilabel reach the model evaluation (they were
    dropped), and the report says the threshold used (it said 0.5 whatever was used)."""
    with_oracle(monkeypatch)
    monkeypatch.setenv("HISTOCURATE_PREDICT__WORKERS", "0")
    out = ws / "reports" / "evaluate" / "models" / "ds-oracle"
    base = ["evaluate", "--model", str(ws / "oracle.pt"), "--dataset", "ds", "--bootstrap", "0",
            "-w", str(ws), "--no-prefect"]  # fmt: skip

    def scores(*flags: str) -> tuple[pd.DataFrame, str]:
        assert main([*base, *flags]) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        table = pd.read_csv(out / "evaluation.csv")
        whole = table[(table.group == "All") & table.cell_type.isna()]
        return whole.set_index("metric"), printed + (out / "report.md").read_text()

    loose, text = scores()
    assert "IoU > 0.5;" in text and "pooled over tiles" in text
    strict, text = scores("--iou-threshold", "0.999", "--aggregate", "tile_mean",
                          "--multilabel", "split")  # fmt: skip
    assert "IoU > 0.999;" in text and "IoU > 0.5" not in text
    assert "mean over tiles" in text and "splits its FN" in text
    assert set(strict["aggregate"]) == {"tile_mean"} and set(loose["aggregate"]) == {"pooled"}
    # the oracle's masks are near-exact (DQ 1, SQ 0.9994 at 0.5): at 0.999 some pairs are
    # lost (DQ 0.81 here), and those kept overlap by more than 0.999
    assert loose.loc["dq", "value"] == 1.0 and strict.loc["dq", "value"] < 0.95
    assert strict.loc["sq", "value"] > 0.999


@pytest.mark.parametrize(
    "flags",
    [
        ["--radius", "6"],
        ["--match", "points"],
        ["--tile-size", "64"],
        ["--extra-tiles", "drop"],
        ["--out", "m.csv"],
        ["--truth", "t.parquet"],
        ["--pred", "p.parquet"],
        ["--pred2", "p.parquet"],
    ],
)
def test_cli_options_that_cannot_apply_to_models_are_refused(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--model", "m", "--dataset", "ds", *flags, "-w", str(tmp_path),
            "--no-prefect"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{flags[0]} " in err and "does not apply to --model/--dataset" in err, err


def test_cli_fold_without_a_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--truth", "t.parquet", "--pred", "p.parquet", "--fold", "1", "-w",
            str(tmp_path), "--no-prefect"]  # fmt: skip
    assert main(args) == 2
    assert "--fold goes with --model" in capsys.readouterr().err
