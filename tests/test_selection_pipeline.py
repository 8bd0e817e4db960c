"""The selection end to end: pure pipeline over arrays, then a workspace through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_schema import SELECTION, TILES, features_schema
from data_schema.selection import ARMS
from histocurate.cli.app import main
from histocurate.config import SelectionConfig, load_config
from histocurate.errors import SchemaError, UserInputError
from histocurate.features.store import write_slide_features
from histocurate.io import read_table, write_partition, write_table
from histocurate.selection.pipeline import run_selection
from histocurate.selection.report import render_markdown
from histocurate.selection.sources import ArrayFeatures, WorkspaceFeatures
from histocurate.testing.selection_data import SyntheticCohort, SyntheticFeatures
from histocurate.workspace import Workspace, init_workspace

FAST = {
    "hidden_sizes": [[8], [8, 4]],
    "epochs": 6,
    "learning_rate": 1e-2,
    "ensemble_members": 2,
    "outer_folds": 2,
    "inner_folds": 2,
    "n_tiles": 12,
    "n_uncertain": 6,
    "kmeans_clusters": 5,
}
COHORT = SyntheticCohort(
    n_slides=8,
    tiles_per_slide=60,
    dim=12,
    n_cohorts=3,
    indications=("LUAD", "LUSC"),
    encoders=("enc_a", "enc_b"),
)


def _labels(cohort: SyntheticCohort = COHORT) -> pd.DataFrame:
    slides = cohort.slides()
    return cohort.labels(slides.loc[slides["indication"] == "LUSC", "slide_id"].tolist())


def _run(
    config: SelectionConfig, cohort: SyntheticCohort = COHORT, labels: pd.DataFrame | None = None
):
    return run_selection(
        "LUAD",
        cohort.slides(),
        SyntheticFeatures(cohort),
        _labels(cohort) if labels is None else labels,
        config=config,
    )


def test_full_selection_is_reproducible_and_explained() -> None:
    config = SelectionConfig(**FAST)
    result = _run(config)
    sel = result.selection
    assert list(sel.columns) == SELECTION.column_names
    assert sel["tile_id"].is_unique and set(sel["indication"]) == {"LUAD"}
    assert set(sel["slide_id"]) <= set(COHORT.slides().query("indication == 'LUAD'")["slide_id"])
    counts = sel["arm"].value_counts()
    assert counts.get("diversity", 0) + counts.get("rare", 0) == 12
    assert counts.get("uncertainty", 0) <= 6 and "rare" in counts
    rare = sel[sel["arm"] == "rare"]
    assert rare["rare_type"].notna().all() and rare["rare_score"].between(0, 1).all()
    assert rare["bald"].notna().all() and rare["model"].notna().all()
    div = sel[sel["arm"] == "diversity"]
    assert div["cluster_id"].notna().all() and div["rare_type"].isna().all()
    unc = sel[sel["arm"] == "uncertainty"]
    assert unc["cluster_id"].notna().all() and (unc["rare_score"] > 0.4).all()
    assert result.n_candidates == 12 and result.cv is not None
    assert len(result.predicted) == 4 and len(result.per_slide) == 4
    # the rare pool before the draw: top 2 per slide and type, best first within a slide
    pool = result.rare_pool
    assert (pool.groupby(["slide_id", "rare_type"]).size() == 2).all()
    assert len(pool) == 4 * 2 * pool["rare_type"].nunique() and set(rare["tile_id"]) <= set(
        pool["tile_id"]
    )
    firsts = pool.groupby(["slide_id", "rare_type"], sort=False)["rare_score"]
    assert (firsts.first() >= firsts.last()).all()
    again = _run(config)
    pd.testing.assert_frame_equal(again.selection, sel)
    other = _run(SelectionConfig(**FAST | {"seed": 1}))
    assert set(other.selection["tile_id"]) != set(sel["tile_id"])


def test_arms_subsets_and_one_encoder() -> None:
    one = SyntheticCohort(**{**COHORT.__dict__, "encoders": ("enc_a",)})
    only_div = _run(SelectionConfig(**FAST | {"arms": ["diversity"]}), one)
    assert set(only_div.selection["arm"]) == {"diversity"} and only_div.cv is None
    assert len(only_div.selection) == 12
    # uncertainty alone (larger slides and ensembles, so that members disagree somewhere)
    larger = SyntheticCohort(**{**one.__dict__, "tiles_per_slide": 200})
    unc = _run(SelectionConfig(**FAST | {"arms": ["uncertainty"], "ensemble_members": 4}),
               larger, _labels(larger))  # fmt: skip
    sel = unc.selection
    assert len(sel) == 6 and set(sel["arm"]) == {"uncertainty"}
    assert (sel["rare_score"] > 0.4).all() and (sel["bald"] > 0).all()
    assert sel["cluster_id"].notna().all() and (sel["draw_weight"] > 0).all()
    assert unc.n_candidates == 6
    assert any("one encoder only" in n and "6 candidates" in n for n in unc.notes)
    # on the small slides every ensemble agrees: nothing to select, and the error says why
    with pytest.raises(UserInputError, match=r"uncertainty pool holds 0 tiles.*more arms"):
        _run(SelectionConfig(**FAST | {"arms": ["uncertainty"]}), one)
    with pytest.raises(UserInputError, match="needs presence labels"):
        run_selection("LUAD", one.slides(), SyntheticFeatures(one), None,
                      config=SelectionConfig(**FAST | {"arms": ["rare"]}))  # fmt: skip


def test_type_without_positive_and_one_cohort() -> None:
    one_cohort = SyntheticCohort(**{**COHORT.__dict__, "n_cohorts": 1})
    labels = _labels(one_cohort)
    labels["eosinophil"] = False
    result = _run(SelectionConfig(**FAST), one_cohort, labels)
    assert any(n.startswith("eosinophil: no labelled tile") for n in result.notes)
    assert any("grouped by slide" in n for n in result.notes)
    assert "eosinophil" not in set(result.cv.table["rare_type"])
    assert "eosinophil" not in set(result.selection["rare_type"].dropna())


def test_bad_inputs() -> None:
    config = SelectionConfig(**FAST)
    with pytest.raises(UserInputError, match="no slide of indication 'BRCA'"):
        run_selection("BRCA", COHORT.slides(), SyntheticFeatures(COHORT), None, config=config)
    with pytest.raises(UserInputError, match="were asked"):
        _run(SelectionConfig(**FAST | {"n_tiles": 10_000}))
    ids = np.array(["a", "b", "c"])
    values = np.ones((3, 4), np.float32)
    values[1, 2] = np.nan
    source = ArrayFeatures({"S": {"e": (ids, values)}}, ("e",))
    with pytest.raises(UserInputError, match="NaN or infinite"):
        source.load("S")
    # no labels at all (`_run` would pass the synthetic ones): the labelled arms are skipped
    no_labels = run_selection(
        "LUAD", COHORT.slides(), SyntheticFeatures(COHORT), None, config=config
    )
    assert set(no_labels.selection["arm"]) == {"diversity"}
    assert any("no presence labels" in n for n in no_labels.notes)
    assert no_labels.arms == ["diversity"]
    assert "arms: diversity; encoders:" in render_markdown(no_labels)  # the run, as reported


def test_an_arm_outside_the_schema_is_refused_on_write(tmp_path: Path) -> None:
    selection = _run(SelectionConfig(**FAST | {"arms": ["diversity"]})).selection.copy()
    write_table(selection, tmp_path / "ok.parquet", SELECTION)
    selection.loc[selection.index[0], "arm"] = "novelty"
    with pytest.raises(
        SchemaError, match=r"column 'arm' of table 'selection' holds \['novelty'\]"
    ) as info:
        write_table(selection, tmp_path / "bad.parquet", SELECTION)
    assert str(list(ARMS)) in str(info.value)
    assert not (tmp_path / "bad.parquet").exists()


# -- workspace, CLI ---------------------------------------------------------------------
def _tile_rows(slide_id: str, tile_ids: np.ndarray, info: pd.Series, svs: Path) -> pd.DataFrame:
    n = len(tile_ids)
    return pd.DataFrame(
        {
            "tile_id": tile_ids,
            "slide_id": slide_id,
            "indication": info["indication"],
            "cohort": info["cohort"],
            "slide_path": str(svs),
            "x": (np.arange(n) % 8) * 224,
            "y": (np.arange(n) // 8) * 224,
            "size_level0": 224,
            "mpp": 0.5,
            "tile_mpp": 0.5,
            "tile_px": 224,
            "read_level": 0,
            "read_size": 224,
            "resized": False,
            "tissue_fraction": 1.0,
        }
    )


@pytest.fixture(name="selection_workspace")
def selection_workspace_fixture(tmp_path: Path) -> Path:
    svs = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_small_region.svs"
    root = tmp_path / "ws"
    overrides = {"selection": FAST | {"labels": "points.csv"}}
    init_workspace(root, load_config(root, overrides, require_file=False, environ={}))
    ws = Workspace(root)
    source = SyntheticFeatures(COHORT)
    for info in COHORT.slides().to_dict("records"):
        feats = source.load(info["slide_id"])
        write_partition(
            _tile_rows(info["slide_id"], feats.tile_ids, pd.Series(info), svs),
            ws.tiles,
            info["slide_id"],
            TILES,
        )
        for enc in ("enc_a", "enc_b"):
            write_slide_features(
                ws.features(enc), info["slide_id"], enc, list(feats.tile_ids), feats.values[enc]
            )
    labels = _labels()
    long = labels.melt(id_vars=["tile_id", "slide_id"], var_name="label", value_name="present")
    long[long["present"]][["tile_id", "label"]].to_csv(root / "points.csv", index=False)
    return root


def test_cli_select_writes_selection_and_report(
    selection_workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = selection_workspace
    code = main(
        ["select", "--indication", "LUAD", "-w", str(workspace), "--no-prefect", "--seed", "3"]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    ws = Workspace(workspace)
    sel = read_table(ws.selection, SELECTION)
    assert len(sel) >= 12 and set(sel["indication"]) == {"LUAD"}
    folder = ws.reports / "select" / "LUAD"
    report = (folder / "report.md").read_text()
    assert "Tiles per arm" in report and "Presence models (12 candidates" in report
    assert "Tiles per arm" in out and "selection.parquet" in out
    assert (folder / "mosaic.png").stat().st_size > 1000
    assert {"cv.csv", "per_slide.csv", "model_choice.csv"} <= {p.name for p in folder.iterdir()}
    # the labels were seen only as tiles of LUSC slides: those slides' features fed the models
    assert "points.csv" in report
    code = main(
        [
            "select",
            "--indication",
            "LUAD",
            "-w",
            str(workspace),
            "--no-prefect",
            "--arms",
            "diversity",
            "--n-tiles",
            "5",
        ]
    )
    assert code == 0
    assert len(read_table(ws.selection, SELECTION)) == 5  # the indication's file is replaced


def test_cli_bad_input(selection_workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = selection_workspace
    assert main(["select", "--indication", "BRCA", "-w", str(workspace), "--no-prefect"]) == 2
    assert "no slide of indication 'BRCA'" in capsys.readouterr().err
    assert (
        main(
            [
                "select",
                "--indication",
                "LUAD",
                "-w",
                str(workspace),
                "--no-prefect",
                "--n-tiles",
                "99999",
            ]
        )
        == 2
    )
    assert "were asked" in capsys.readouterr().err
    assert (
        main(["select", "--indication", "LUAD", "-w", str(workspace), "--arms", "rare,typo"]) == 2
    )
    assert "--arms" in capsys.readouterr().err
    # labels by display name are accepted; a label the ontology does not know is named
    points = pd.read_csv(workspace / "points.csv")
    points["label"] = points["label"].map(lambda t: t.replace("_", " ").capitalize())
    points.to_csv(workspace / "named.csv", index=False)
    args = ["select", "--indication", "LUAD", "-w", str(workspace), "--no-prefect"]
    assert main([*args, "--labels", str(workspace / "named.csv")]) == 0
    assert "Presence models (12 candidates" in capsys.readouterr().out
    points.loc[3, "label"] = "Eosinophill"
    points.to_csv(workspace / "typo.csv", index=False)
    assert main([*args, "--labels", str(workspace / "typo.csv")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "typo.csv" in err and "'Eosinophill'" in err and "[3]" in err


def test_features_file_with_two_encoders_is_refused(selection_workspace: Path) -> None:
    workspace = selection_workspace
    ws = Workspace(workspace)
    feats = SyntheticFeatures(COHORT).load("S0000")
    table = pa.table(
        {
            "tile_id": feats.tile_ids,
            "slide_id": ["S0000"] * len(feats),
            "encoder": ["enc_a"] * (len(feats) - 1) + ["phikon"],
            "features": pa.FixedSizeListArray.from_arrays(
                pa.array(feats.values["enc_a"].ravel()), 12
            ),
        }
    )
    write_partition(table, ws.features("enc_a"), "S0000", features_schema(12))
    with pytest.raises(UserInputError, match=r"phikon.*\['S0000'\].*embed --encoder enc_a"):
        WorkspaceFeatures(workspace, ("enc_a",)).load("S0000")


def test_labels_and_slides_are_checked_before_anything_runs() -> None:
    config = SelectionConfig(**FAST)
    labels = _labels()
    # blanks or text where booleans belong: named, not read as True
    blank = labels.astype({"eosinophil": object})
    blank.loc[0, "eosinophil"] = None
    with pytest.raises(UserInputError, match=r"column 'eosinophil'.*true/false"):
        _run(config, labels=blank)
    text = labels.assign(neutrophil=labels["neutrophil"].map({True: "True", False: "False"}))
    with pytest.raises(UserInputError, match="column 'neutrophil'"):
        _run(config, labels=text)
    # one tile id on two slides: the labels of one would be read as the other's
    shared = labels.copy()
    shared.loc[0, "slide_id"] = "S0009"
    with pytest.raises(UserInputError, match="unique across slides"):
        _run(config, labels=pd.concat([labels, shared.iloc[:1]]))
    # the same tile twice with different labels: combined whatever the row order
    twice = pd.concat([labels, labels.iloc[:5].assign(mitotic_figure=True)])
    forward = _run(config, labels=twice).selection
    backward = _run(config, labels=twice.iloc[::-1]).selection
    pd.testing.assert_frame_equal(forward, backward)
    # configured types without a column, and a type present on every tile: said, skipped
    partial = labels.drop(columns=["macrophage"]).assign(eosinophil=True)
    result = _run(config, labels=partial)
    assert any("no column for ['macrophage']" in n for n in result.notes)
    assert any(n.startswith("eosinophil: every labelled tile") for n in result.notes)
    assert not {"macrophage", "eosinophil"} & set(result.cv.table["rare_type"])
    slides = COHORT.slides()
    with pytest.raises(UserInputError, match=r"\['S0000'\] listed twice"):
        run_selection("LUAD", pd.concat([slides, slides.iloc[:1]]), SyntheticFeatures(COHORT),
                      labels, config=config)  # fmt: skip
    with pytest.raises(UserInputError, match="--n-uncertain 0"):
        _run(SelectionConfig(**FAST | {"arms": ["uncertainty"], "n_uncertain": 0}))
    feats = SyntheticFeatures(COHORT).load("S0000")
    misaligned = ArrayFeatures(
        {"S0000": {"enc_a": (feats.tile_ids[:-1], feats.values["enc_a"])}}, ("enc_a",)
    )
    with pytest.raises(UserInputError, match="59 tile ids but values of shape"):
        misaligned.load("S0000")
