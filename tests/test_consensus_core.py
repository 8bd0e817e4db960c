"""Consensus core: labels (majority, unknown, Dawid-Skene) and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, Polygon, box

from histocurate.consensus import apply_labels, build_consensus, consensus_nuclei, dawid_skene
from histocurate.consensus.labels import majority_label, proposed_labels
from histocurate.errors import UserInputError
from histocurate.labels import LABELS


def _nucleus(cx: float, cy: float, votes: dict[str, str], tile: str = "t1") -> list[dict]:
    return [
        dict(tile_id=tile, annotator=a, x=cx + k, y=cy, label=lab,
             geometry=Point(cx + k, cy).buffer(8, 8))
        for k, (a, lab) in enumerate(votes.items())
    ]  # fmt: skip


def _frame(*nuclei: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([row for n in nuclei for row in n])
    frame.insert(0, "annotation_id", np.arange(1, len(frame) + 1))
    return frame


def test_majority_unknown_and_ties() -> None:
    frame = _frame(
        _nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte", "C": "plasmocyte"}),
        _nucleus(60, 20, {"A": "lymphocyte", "B": "plasmocyte"}),
        _nucleus(100, 20, {"A": "lymphocyte", "B": "unknown"}),
        _nucleus(140, 20, {"A": "unknown", "B": "unknown"}),
        _nucleus(180, 20, {"A": "eosinophil", "B": "neutrophil", "C": "unknown"}),
    )
    nuclei = consensus_nuclei(frame).sort_values("x").reset_index(drop=True)
    assert nuclei["label"].tolist() == ["lymphocyte", None, "lymphocyte", None, None]
    assert nuclei["labels"].tolist() == [
        ["lymphocyte", "plasmocyte"],
        ["lymphocyte", "plasmocyte"],
        ["lymphocyte"],
        ["unknown"],
        ["eosinophil", "neutrophil"],
    ]
    assert nuclei["member_labels"][4] == ["eosinophil", "neutrophil", "unknown"]
    assert nuclei["x"][0] == pytest.approx(21.0)  # mean of the clicks
    assert (nuclei["label_rule"] == "majority").all()


def test_label_helpers() -> None:
    assert proposed_labels([]) == ["unknown"]
    assert majority_label(["unknown"]) is None
    assert majority_label(["a", "a", "b", "b"]) is None
    assert majority_label(["a", "a", "b"]) == "a"


def test_display_names_are_accepted_and_normalised() -> None:
    frame = _frame(_nucleus(20, 20, {"A": "Lymphocyte", "B": "lymphocyte"}))
    assert consensus_nuclei(frame)["label"].tolist() == ["lymphocyte"]


def _campaign(seed: int = 0, n: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    """Three good annotators and a poor one ('D', who calls every lymphocyte a plasmocyte).
    Half the nuclei are seen by three annotators (DS learns D's habit there), half by D and
    one good annotator only, where majority cannot settle a disagreement."""
    rng = np.random.default_rng(seed)
    types = np.array(["lymphocyte", "plasmocyte", "fibroblast", "cancer_cell"])
    truth = rng.choice(types, n, p=[0.4, 0.2, 0.2, 0.2])
    rows = []
    for i, t in enumerate(truth):
        if rng.random() < 0.5:
            who = sorted(rng.choice(["G0", "G1", "G2", "D"], 3, replace=False))
        else:
            who = [f"G{rng.integers(3)}", "D"]
        votes = {}
        for a in who:
            lab = t if rng.random() < 0.9 else rng.choice(types)
            if a == "D" and t == "lymphocyte":
                lab = "plasmocyte"
            votes[str(a)] = str(lab)
        rows.append(_nucleus(30 * (i % 14) + 20, 30 * (i // 14) + 20, votes, tile=f"t{i // 50}"))
    return _frame(*rows), truth


def test_dawid_skene_learns_a_systematic_annotator() -> None:
    frame, truth = _campaign()
    result = build_consensus(frame, label_rule="dawid-skene")
    nuclei = result.nuclei.sort_values("consensus_id").reset_index(drop=True)
    # Rows were created in truth order, so consensus ids (smallest member id) follow it too.
    assert len(nuclei) == len(truth)
    ds = nuclei["label_dawid_skene"].to_numpy(dtype=object)
    maj = nuclei["label_majority"].to_numpy(dtype=object)
    ds_correct = np.mean(ds == truth)
    maj_correct = np.mean(maj == truth)
    assert ds_correct > maj_correct + 0.1
    assert nuclei["label"].equals(nuclei["label_dawid_skene"])
    fit = result.dawid_skene
    assert fit is not None and fit.converged
    accuracy = fit.accuracy()
    assert accuracy["D"] < min(accuracy[g] for g in ("G0", "G1", "G2"))
    lym, pla = LABELS.index("lymphocyte"), LABELS.index("plasmocyte")
    assert fit.confusion[fit.annotators.index("D"), lym, pla] > 0.8


def test_dawid_skene_ignores_unknown_votes_and_items_without_types() -> None:
    fit = dawid_skene([[("A", "unknown")], [("A", "lymphocyte"), ("B", "lymphocyte")]])
    labels, _prob = fit.labels()
    assert labels[1] == "lymphocyte"
    frame = _frame(_nucleus(20, 20, {"A": "unknown", "B": "unknown"}))
    nuclei = consensus_nuclei(frame, label_rule="dawid-skene")
    assert nuclei["label"].isna().all() and nuclei["dawid_skene_probability"].isna().all()


def test_apply_labels_switches_rule_without_rematching() -> None:
    frame, _ = _campaign(n=60)
    nuclei = consensus_nuclei(frame)
    relabelled, fit = apply_labels(nuclei, label_rule="dawid-skene")
    assert fit is not None
    assert relabelled["label"].equals(relabelled["label_dawid_skene"])
    assert relabelled["members"].equals(nuclei["members"])


def test_single_annotator_tile_is_reported_not_an_error() -> None:
    frame = _frame(
        _nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte"}, tile="t1"),
        _nucleus(20, 20, {"A": "lymphocyte"}, tile="t2"),
    )
    result = build_consensus(frame)
    assert result.single_annotator_tiles == ["t2"]
    assert len(result.nuclei) == 1
    status = result.assignments.set_index("annotation_id")["status"]
    assert status.tolist() == ["kept", "kept", "single_annotator_tile"]
    assert result.assignments["consensus_id"].isna().tolist() == [False, False, True]


def test_min_annotators_one_keeps_singletons() -> None:
    frame = _frame(_nucleus(20, 20, {"A": "lymphocyte"}), _nucleus(80, 20, {"B": "fibroblast"}))
    nuclei = consensus_nuclei(frame, min_annotators=1)
    assert len(nuclei) == 2 and nuclei["mean_iou"].isna().all()
    assert nuclei["label"].tolist() == ["lymphocyte", "fibroblast"]
    assert consensus_nuclei(frame, min_annotators=2).empty


def test_annotator_with_zero_clicks_on_a_tile() -> None:
    # C annotated t2 only: t1 still gets consensus from A and B.
    frame = _frame(
        _nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte"}, tile="t1"),
        _nucleus(20, 20, {"A": "fibroblast", "B": "fibroblast", "C": "fibroblast"}, tile="t2"),
    )
    nuclei = consensus_nuclei(frame)
    assert nuclei["n_annotators"].tolist() == [2, 3]


def test_wkb_and_polygon_column_are_accepted() -> None:
    frame = _frame(_nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte"}))
    wkb = frame.drop(columns="geometry").assign(polygon=shapely.to_wkb(frame["geometry"].values))
    assert consensus_nuclei(wkb)["members"].tolist() == [[1, 2]]


def test_invalid_polygons_are_repaired_and_empty_ones_take_no_part() -> None:
    frame = _frame(
        _nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte"}),
        _nucleus(80, 20, {"A": "fibroblast", "B": "fibroblast"}),
    )
    bowtie = Polygon([(12, 12), (28, 28), (28, 12), (12, 28)])  # self-intersecting
    assert not bowtie.is_valid
    frame.loc[0, "geometry"] = box(12, 12, 28, 28)
    frame.loc[1, "geometry"] = bowtie
    frame.loc[2, "geometry"] = Polygon()
    frame.loc[3, "geometry"] = None
    result = build_consensus(frame)
    assert result.n_repaired_masks == 1
    status = result.assignments.set_index("annotation_id")["status"]
    assert status[3] == status[4] == "no_mask"


def test_empty_input_gives_empty_frame_with_columns() -> None:
    frame = _frame(_nucleus(20, 20, {"A": "lymphocyte"})).iloc[0:0]
    nuclei = consensus_nuclei(frame)
    assert nuclei.empty and "labels" in nuclei.columns


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(label=["lymphocyte", "dragon"]), "dragon"),
        (lambda f: f.assign(annotation_id=[5, 5]), "more than one row"),
        (lambda f: f.assign(tile_id=["t1", None]), "no tile"),
        (lambda f: f.assign(x=[1.0, np.nan]), "'x'"),
        (lambda f: f.drop(columns="geometry"), "geometry"),
        (lambda f: f.assign(geometry=[1, 2]), "geometry must be"),
        (lambda f: f.assign(annotation_id=["a", None]), "no annotation_id"),
    ],
)
def test_bad_input_raises_user_input_error(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    frame = _frame(_nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte"}))
    with pytest.raises(UserInputError, match=message):
        consensus_nuclei(edit(frame))


def test_bad_options() -> None:
    frame = _frame(_nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte"}))
    with pytest.raises(UserInputError):
        consensus_nuclei(frame, min_annotators=0)
    with pytest.raises(UserInputError):
        consensus_nuclei(frame, label_rule="vote")  # type: ignore[arg-type]


def test_string_annotation_ids_from_other_tools() -> None:
    frame = _frame(
        _nucleus(20, 20, {"A": "lymphocyte", "B": "lymphocyte", "C": "fibroblast"}),
        _nucleus(60, 60, {"A": "fibroblast", "B": "fibroblast"}),
    )
    frame = frame.assign(annotation_id=[f"qupath-{k}" for k in (7, 3, 9, 5, 4)])
    result = build_consensus(frame)
    nuclei = result.nuclei.sort_values("x")
    assert nuclei["consensus_id"].tolist() == ["qupath-3", "qupath-4"]  # smallest member id
    assert nuclei["members"].tolist()[0] == ["qupath-7", "qupath-3", "qupath-9"]
    kept = result.assignments.set_index("annotation_id")["consensus_id"]
    assert kept["qupath-9"] == "qupath-3" and kept["qupath-5"] == "qupath-4"
