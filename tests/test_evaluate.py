"""`evaluate` on instance tables, the reader's errors, and the `histocurate evaluate` CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from data_schema import EVALUATION, INSTANCES
from histocurate.cli.app import main
from histocurate.io import read_table, write_table
from histocurate.metrics import (
    EvaluationOptions,
    MetricsInputError,
    evaluate,
    instances_from_frame,
    panoptic_quality,
    rasterize,
    read_instances,
)
from histocurate.testing.metrics_data import synthetic_prediction, synthetic_truth

PRED_COLUMNS = ["tile_id", "x", "y", "polygon", "label"]


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    truth = synthetic_truth(n_tiles=6, nuclei_per_tile=40, tile_size=128, seed=0)
    a = synthetic_prediction(truth, tile_size=128, seed=1)
    b = synthetic_prediction(truth, tile_size=128, seed=2, confusion=0.5, miss_rate=0.3)
    return truth, a, b


def value(ev, prediction: str, metric: str, cell: str | None = None) -> pd.Series:  # type: ignore[no-untyped-def]
    t = ev.table
    sel = t[(t.prediction == prediction) & (t.metric == metric)]
    sel = sel[sel.cell_type.isna()] if cell is None else sel[sel.cell_type == cell]
    assert len(sel) == 1
    return sel.iloc[0]


def test_pooled_counts_equal_the_map_function(tables) -> None:  # type: ignore[no-untyped-def]
    truth, a, _ = tables
    ev = evaluate(
        instances_from_frame(truth, origin="truth"),
        [("a", instances_from_frame(a, origin="a"))],
        options=EvaluationOptions(tile_size=128, n_boot=50),
    )
    tp = fp = fn = 0
    iou = 0.0
    for tile, group in truth.groupby("tile_id"):
        pred = a[a.tile_id == tile]
        tmap = rasterize(list(group.polygon), shape=(128, 128))
        pmap = rasterize(list(pred.polygon), shape=(128, 128))
        r = panoptic_quality(tmap, pmap)
        tp, fp, fn, iou = tp + r.tp, fp + r.fp, fn + r.fn, iou + r.iou_sum
    per_tile = ev.per_tile
    assert (per_tile.tp.sum(), per_tile.fp.sum(), per_tile.fn.sum()) == (tp, fp, fn)
    assert value(ev, "a", "dq").value == pytest.approx(tp / (tp + fp / 2 + fn / 2))
    assert value(ev, "a", "sq").value == pytest.approx(iou / tp)
    row = value(ev, "a", "pq")
    assert row.ci_low <= row.value <= row.ci_high
    assert ev.mode == "masks" and ev.tile_size == 128


def test_truth_against_itself(tables) -> None:  # type: ignore[no-untyped-def]
    truth, _, _ = tables
    inst = instances_from_frame(truth, origin="truth")
    as_pred = truth.assign(label=[s[0] for s in truth.labels]).drop(columns=["labels"])
    pred = instances_from_frame(as_pred, origin="pred")
    ev = evaluate(inst, [("self", pred), ("again", pred)], options=EvaluationOptions(n_boot=100))
    for metric in ("dq", "sq", "pq", "f1_mean"):
        assert value(ev, "self", metric).value == pytest.approx(1.0)
        diff = value(ev, "again - self", metric)
        assert diff.value == 0.0 and diff.p_value == 1.0


def test_same_seed_same_table_and_paired_difference(tables) -> None:  # type: ignore[no-untyped-def]
    truth, a, b = tables
    t = instances_from_frame(truth, origin="truth")
    preds = [("a", instances_from_frame(a, origin="a")), ("b", instances_from_frame(b, origin="b"))]
    one = evaluate(t, preds, options=EvaluationOptions(n_boot=200, seed=3))
    two = evaluate(t, preds, options=EvaluationOptions(n_boot=200, seed=3))
    pd.testing.assert_frame_equal(one.table, two.table)
    other = evaluate(t, preds, options=EvaluationOptions(n_boot=200, seed=4))
    assert not np.allclose(one.table.ci_low.fillna(0), other.table.ci_low.fillna(0))
    diff = value(one, "b - a", "dq")
    assert diff.value == pytest.approx(value(one, "b", "dq").value - value(one, "a", "dq").value)
    assert diff.value < 0 and diff.p_value < 0.05  # b misses far more nuclei
    assert set(one.table.kind) == {"value", "difference"}


def test_points_only_tables(tables) -> None:  # type: ignore[no-untyped-def]
    truth, a, _ = tables
    t = instances_from_frame(truth.drop(columns=["polygon"]), origin="truth")
    p = instances_from_frame(a.drop(columns=["polygon"]), origin="a")
    ev = evaluate(t, [("a", p)], options=EvaluationOptions(n_boot=20, radius=6.0))
    assert ev.mode == "points" and ev.tile_size is None
    assert 0.5 < value(ev, "a", "dq").value <= 1.0
    assert math.isnan(value(ev, "a", "sq").value) and math.isnan(value(ev, "a", "pq").value)


def test_tile_mean_aggregate(tables) -> None:  # type: ignore[no-untyped-def]
    truth, a, _ = tables
    ev = evaluate(
        instances_from_frame(truth, origin="truth"),
        [("a", instances_from_frame(a, origin="a"))],
        options=EvaluationOptions(n_boot=20, aggregate="tile_mean"),
    )
    assert value(ev, "a", "pq").value == pytest.approx(ev.per_tile.pq.mean())


def test_extra_tiles_policies(tables) -> None:  # type: ignore[no-untyped-def]
    truth, a, _ = tables
    extra = a.copy()
    extra.loc[:4, "tile_id"] = "ghost"
    t = instances_from_frame(truth, origin="truth")
    p = instances_from_frame(extra, origin="extra.parquet")
    with pytest.raises(MetricsInputError, match=r"1 tile\(s\) of extra.parquet .*ghost"):
        evaluate(t, [("x", p)])
    dropped = evaluate(t, [("x", p)], options=EvaluationOptions(extra_tiles="drop", n_boot=10))
    empty = evaluate(t, [("x", p)], options=EvaluationOptions(extra_tiles="empty", n_boot=10))
    assert dropped.n_tiles == 6 and empty.n_tiles == 7
    assert value(empty, "x", "dq").value < value(dropped, "x", "dq").value
    assert any("ghost" in n for n in dropped.notes)


def test_reader_errors(tmp_path: Path, tables) -> None:  # type: ignore[no-untyped-def]
    _, a, _ = tables
    with pytest.raises(MetricsInputError, match="no such file"):
        read_instances(tmp_path / "missing.parquet")
    a.drop(columns=["label"]).to_parquet(tmp_path / "nolabel.parquet")
    with pytest.raises(
        MetricsInputError, match=r"nolabel.parquet: missing column\(s\) \['label'\]"
    ):
        read_instances(tmp_path / "nolabel.parquet")
    a.assign(polygon="not wkb").to_parquet(tmp_path / "str.parquet")
    with pytest.raises(
        MetricsInputError, match=r"column .polygon. has type (large_)?string, expected binary"
    ):
        read_instances(tmp_path / "str.parquet")
    a[["tile_id", "label"]].to_parquet(tmp_path / "nogeom.parquet")
    with pytest.raises(MetricsInputError, match="no geometry"):
        read_instances(tmp_path / "nogeom.parquet")
    (tmp_path / "junk.parquet").write_text("hello")
    with pytest.raises(MetricsInputError, match="not a readable Parquet"):
        read_instances(tmp_path / "junk.parquet")


def test_reader_accepts_consensus_like_folders(tmp_path: Path, tables) -> None:  # type: ignore[no-untyped-def]
    truth, a, _ = tables
    folder = tmp_path / "consensus.parquet"
    folder.mkdir()
    for i, (_, part) in enumerate(truth.groupby("tile_id")):
        part.assign(extra_column=1).to_parquet(folder / f"part{i}.parquet")
    inst = read_instances(folder)
    assert len(inst) == len(truth) and inst.labels is not None
    write_table(a[PRED_COLUMNS], tmp_path / "pred.parquet", INSTANCES)
    assert len(read_instances(tmp_path / "pred.parquet")) == len(a)


def test_cli_prints_and_writes(tmp_path: Path, tables, capsys) -> None:  # type: ignore[no-untyped-def]
    truth, a, b = tables
    truth.to_parquet(tmp_path / "truth.parquet")
    write_table(a[PRED_COLUMNS], tmp_path / "model_a.parquet", INSTANCES)
    write_table(b[PRED_COLUMNS], tmp_path / "model_b.parquet", INSTANCES)
    args = [
        "evaluate",
        "--truth",
        str(tmp_path / "truth.parquet"),
        "--pred",
        str(tmp_path / "model_a.parquet"),
        "--bootstrap",
        "50",
        "-w",
        str(tmp_path),
    ]
    assert (
        main(
            [
                *args,
                "--pred2",
                str(tmp_path / "model_b.parquet"),
                "--out",
                str(tmp_path / "m.parquet"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "PQ" in out and "Paired comparison" in out and "p-value" in out
    table = read_table(tmp_path / "m.parquet", EVALUATION)
    assert set(table.prediction) == {"model_a", "model_b", "model_b - model_a"}
    assert main([*args, "--out", str(tmp_path / "m.csv"), "--tile-size", "128"]) == 0
    assert pd.read_csv(tmp_path / "m.csv").shape[0] == 4 + 13 * 3


def test_cli_bad_input_exits_2(tmp_path: Path, tables, capsys) -> None:  # type: ignore[no-untyped-def]
    truth, a, _ = tables
    truth.to_parquet(tmp_path / "truth.parquet")
    a.assign(label="monocyte").to_parquet(tmp_path / "bad.parquet")
    base = ["evaluate", "--truth", str(tmp_path / "truth.parquet"), "-w", str(tmp_path)]
    assert main([*base, "--pred", str(tmp_path / "bad.parquet")]) == 2
    assert "monocyte" in capsys.readouterr().err
    assert main([*base, "--pred", str(tmp_path / "nope.parquet")]) == 2
    assert main([*base, "--pred", str(tmp_path / "bad.parquet"), "--out", "x.txt"]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err


def test_untyped_and_ambiguous_truth_rows_are_read() -> None:
    frame = pd.DataFrame(
        {
            "tile_id": ["t", "t", "t"],
            "label": ["lymphocyte", None, "unknown"],
            "labels": [["lymphocyte"], ["lymphocyte", "plasmocyte"], ["unknown"]],
            "polygon": [shapely.to_wkb(shapely.box(i * 10, 0, i * 10 + 5, 5)) for i in range(3)],
        }
    )
    inst = instances_from_frame(frame, origin="consensus")
    assert inst.label == ["lymphocyte", None, "unknown"]
    assert inst.xy is not None and inst.xy[0].tolist() == [2.5, 2.5]


def test_undefined_metrics_are_written_as_nulls(tmp_path: Path) -> None:
    from histocurate.metrics.output import write_evaluation

    boxes = [shapely.to_wkb(shapely.box(i * 10, 0, i * 10 + 6, 6)) for i in range(3)]
    frame = pd.DataFrame({"tile_id": "t", "label": "lymphocyte", "polygon": boxes})
    inst = instances_from_frame(frame, origin="t")
    ev = evaluate(inst, [("p", inst)], options=EvaluationOptions(n_boot=0))
    path = write_evaluation(ev, tmp_path / "e.parquet")
    table = read_table(path, EVALUATION)
    assert table.value.isna().sum() == 12 * 3  # the 12 classes absent from both tables
    assert table.ci_low.isna().all()
