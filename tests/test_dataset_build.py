"""`run_dataset_build` on small synthetic campaigns: tables, maps against nuclei, sources,
resampling, folds, versions, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from data_schema import CONSENSUS, DATASET_NUCLEI, DATASET_TILES, MASKS
from histocurate.campaign import sha256_of
from histocurate.config import load_config
from histocurate.dataset.build import run_dataset_build
from histocurate.dataset.classes import IGNORE_TYPE, class_index
from histocurate.dataset.inputs import campaign_masks_token
from histocurate.dataset.maps import decode_map, decode_rgb
from histocurate.dataset.run import DatasetRun
from histocurate.dataset.store import datasets_root, list_datasets
from histocurate.dataset.synthetic import SyntheticCampaign, SyntheticTile, write_campaign
from histocurate.io import read_provenance, read_table, write_partition, write_table
from histocurate.workspace import Workspace

RARE = "mitotic_figure"


def campaign_tiles() -> list[SyntheticTile]:
    """7 slides: odd ones annotated by 3 (consensus), even ones by 1; LUAD and COAD; a rare
    type on 4 slides; slide s6 scanned at 20x (64 px at 0.5 um/px: resampled)."""
    tiles = []
    for s in range(6):
        for t in range(2):
            labels = None if t else ["lymphocyte", "cancer_cell", "fibroblast", RARE] * 2
            tiles.append(
                SyntheticTile(
                    f"s{s}_t{t}",
                    f"s{s}",
                    indication="LUAD" if s < 3 else "COAD",
                    annotators=("ann1", "ann2", "ann3") if s % 2 else (f"ann{1 + s % 3}",),
                    labels=labels if s < 4 else None,
                    seed=10 * s + t,
                    disagree=2,
                    unknown=1,
                )
            )
    tiles.append(
        SyntheticTile(
            "s6_t0",
            "s6",
            indication="COAD",
            annotators=("ann2",),
            side=64,
            mpp=0.5,
            seed=61,
            labels=["cancer_cell"] * 4,
        )
    )
    return tiles


def make_workspace(root: Path) -> SyntheticCampaign:
    return write_campaign(root, campaign_tiles(), project="camp")


def build(root: Path, name: str = "ds", source: str = "masks", **kwargs: object) -> DatasetRun:
    return run_dataset_build(load_config(root, environ={}), name=name, source=source, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticCampaign, DatasetRun]:
    root = tmp_path_factory.mktemp("dataset") / "ws"
    made = make_workspace(root)
    return made, build(root)


def test_provenance_paths_are_relative_to_the_workspace(
    built: tuple[SyntheticCampaign, DatasetRun],
) -> None:
    _, run = built
    assert run.path is not None
    provenance = json.loads((run.path / "dataset.json").read_text())["provenance"]
    assert provenance["masks"]["path"] == "campaigns/camp/masks.parquet"
    assert provenance["consensus"]["path"] == "campaigns/camp/consensus.parquet"
    assert not Path(provenance["assignments"]).is_absolute()
    assert (run.path.parents[2] / provenance["assignments"]).exists()


def test_tables_open_with_pandas_and_duckdb(built: tuple[SyntheticCampaign, DatasetRun]) -> None:
    _, run = built
    assert run.status == "built" and run.exit_code == 0 and run.path is not None
    tiles = pd.read_parquet(run.path / "tiles.parquet")
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    assert list(tiles.columns) == DATASET_TILES.column_names
    assert list(nuclei.columns) == DATASET_NUCLEI.column_names
    assert len(tiles) == 13 and len(nuclei) == tiles["n_nuclei"].sum() > 0
    assert pq.ParquetFile(run.path / "tiles.parquet").num_row_groups == len(tiles)
    import duckdb  # in the pinned dev set: the check always runs

    found = duckdb.sql(f"select count(*) from '{run.path / 'nuclei.parquet'}'").fetchall()
    assert found == [(len(nuclei),)]
    folds = duckdb.sql(f"select distinct fold from '{run.path / 'tiles.parquet'}'").fetchall()
    assert sorted(f for (f,) in folds) == [0, 1, 2]
    names = sorted(p.name for p in run.path.iterdir())
    assert names == [
        "card.md",
        "class_distribution.png",
        "dataset.json",
        "nuclei.parquet",
        "tiles.parquet",
    ]
    assert [p.name for p in run.path.parent.iterdir()] == [run.version]  # no staging left


def test_maps_agree_with_the_nuclei_table(built: tuple[SyntheticCampaign, DatasetRun]) -> None:
    made, run = built
    assert run.path is not None
    tiles = pd.read_parquet(run.path / "tiles.parquet")
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    campaign = Workspace(made.workspace).campaign("camp")
    for row in tiles.itertuples(index=False):
        inst, types = decode_map(row.inst_map), decode_map(row.type_map)
        image = decode_rgb(row.image)
        assert inst.shape == types.shape == image.shape[:2] == (row.height, row.width)
        mine = nuclei[nuclei["tile_id"] == row.tile_id].set_index("nucleus_id")
        ids, areas = np.unique(inst[inst > 0], return_counts=True)
        assert ids.tolist() == mine.index.tolist() == list(range(1, len(mine) + 1))
        assert areas.tolist() == mine["area"].tolist()
        for nucleus, info in mine.iterrows():
            assert set(np.unique(types[inst == nucleus])) == {info["type_index"]}
            expected = IGNORE_TYPE if pd.isna(info["label"]) else class_index(info["label"])
            assert info["type_index"] == expected
        assert (types[inst == 0] == 0).all()
        assert row.n_undetermined == int((mine["type_index"] == IGNORE_TYPE).sum())
        if not row.resampled:  # the frozen image, byte for byte
            frozen = campaign.image_path(row.tile_id).read_bytes()
            assert sha256_of(row.image) == sha256_of(frozen)


def test_nuclei_keep_labels_sets_and_annotators(
    built: tuple[SyntheticCampaign, DatasetRun],
) -> None:
    _, run = built
    assert run.path is not None
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    tiles = pd.read_parquet(run.path / "tiles.parquet").set_index("tile_id")
    single = nuclei[nuclei["source"] == "single"]
    consensus = nuclei[nuclei["source"] == "consensus"]
    assert (single["n_annotators"] == 1).all() and (consensus["n_annotators"] == 3).all()
    assert set(tiles.loc[consensus["tile_id"], "source"]) == {"consensus"}
    unknown = nuclei[[list(v) == ["unknown"] for v in nuclei["labels"]]]
    assert len(unknown) >= 7 and unknown["label"].isna().all()
    disagreed = consensus[consensus["label"].isna() & (consensus["labels"].map(len) > 1)]
    assert len(disagreed) > 0 and (disagreed["type_index"] == IGNORE_TYPE).all()
    typed = nuclei[nuclei["label"].notna()]
    assert all(list(s) == [v] for s, v in zip(typed["labels"], typed["label"], strict=True))


def test_a_tile_at_another_resolution_is_resampled(
    built: tuple[SyntheticCampaign, DatasetRun],
) -> None:
    made, run = built
    assert run.path is not None
    tiles = pd.read_parquet(run.path / "tiles.parquet").set_index("tile_id")
    row = tiles.loc["s6_t0"]
    assert row["resampled"] and row["source_mpp"] == 0.5 and row["mpp"] == 0.25
    assert (row["width"], row["height"]) == (128, 128)
    assert not tiles.drop(index="s6_t0")["resampled"].any()
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    mine = nuclei[nuclei["tile_id"] == "s6_t0"]
    truth = made.truth["s6_t0"]
    assert len(mine) == len(truth)
    # the polygons are scaled by 2, the areas with them (pixels at 0.25 um)
    scaled = sum(shapely.clip_by_rect(p, 0, 0, 64, 64).area for p in truth["polygon"]) * 4
    assert mine["area"].sum() == pytest.approx(scaled, rel=0.05)
    assert run.info["rasterisation"]["resampled_tiles"] == 1


def test_folds_group_slides_and_spread_types(built: tuple[SyntheticCampaign, DatasetRun]) -> None:
    _, run = built
    assert run.path is not None
    tiles = pd.read_parquet(run.path / "tiles.parquet")
    assert (tiles.groupby("slide_id")["fold"].nunique() == 1).all()
    nuclei = pd.read_parquet(run.path / "nuclei.parquet").merge(
        tiles[["tile_id", "slide_id", "fold"]]
    )
    typed = nuclei[nuclei["label"].notna()]
    for label, group in typed.groupby("label"):
        if group["slide_id"].nunique() >= 3:
            assert set(group["fold"]) == {0, 1, 2}, label
    assert typed[typed["label"] == RARE]["slide_id"].nunique() >= 3
    assert run.info["folds"]["slides"] == dict(zip(tiles["slide_id"], tiles["fold"], strict=True))


def test_consensus_source_takes_the_multi_annotator_tiles(tmp_path: Path) -> None:
    make_workspace(tmp_path / "ws")
    run = build(tmp_path / "ws", source="consensus", name="val")
    assert run.path is not None
    tiles = pd.read_parquet(run.path / "tiles.parquet")
    assert sorted(tiles["slide_id"].unique()) == ["s1", "s3", "s5"]
    assert set(tiles["source"]) == {"consensus"}
    left = {item["tile_id"]: item["reason"] for item in run.info["left_out"]}
    assert left["s0_t0"] == "one annotator (no consensus)" and len(left) == 7


def test_same_inputs_same_version_and_a_rerun_is_a_no_op(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_workspace(first)
    make_workspace(second)
    run_a, run_b = build(first), build(second)
    assert run_a.version == run_b.version
    assert run_a.info["content_hash"] == run_b.info["content_hash"]
    assert run_a.path is not None
    stamp = {p.name: p.stat().st_mtime_ns for p in run_a.path.iterdir()}
    again = build(first)
    assert again.status == "up to date" and again.version == run_a.version
    assert {p.name: p.stat().st_mtime_ns for p in run_a.path.iterdir()} == stamp
    assert all(o.status == "skipped" for o in again.outcomes)


def test_new_annotations_make_a_new_version_beside_the_old(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    old = build(root)
    assert old.path is not None
    before = {p.name: p.read_bytes() for p in old.path.iterdir()}
    campaign = Workspace(root.resolve()).campaign("camp")
    path = campaign.masks / "s0_t0.parquet"
    masks = read_table(path, MASKS)
    extra = masks.iloc[[0]].assign(
        annotation_id=10_000,
        x=100.0,
        y=100.0,
        label="eosinophil",
        polygon=shapely.to_wkb(shapely.Point(100, 100).buffer(8)),
    )
    write_partition(
        pd.concat([masks, extra]),
        campaign.masks,
        "s0_t0",
        MASKS,
        provenance={**read_provenance(path), "clicks": "more"},
    )
    consensus = campaign.consensus  # the consensus stage re-run: stamped with the new masks
    write_table(
        read_table(consensus, CONSENSUS),
        consensus,
        CONSENSUS,
        provenance={"masks": campaign_masks_token(campaign)},
    )
    new = build(root)
    assert new.status == "built" and new.version != old.version
    assert new.info["counts"]["nuclei"] == old.info["counts"]["nuclei"] + 1
    assert {p.name: p.read_bytes() for p in old.path.iterdir()} == before
    assert [v.version for v in list_datasets(datasets_root(root.resolve()), "ds")] == [
        old.version,
        new.version,
    ]
    assert campaign_masks_token(campaign) != old.info["provenance"]["masks"]["token"]


def test_an_interrupted_build_leaves_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("histocurate.dataset.card.save_class_plot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(root)
    folder = datasets_root(root.resolve()) / "ds"
    assert list(folder.iterdir()) == []


def test_a_failed_slide_leaves_no_version_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    import histocurate.dataset.build as build_module

    real = build_module.campaign_tile

    def broken(plan: object, *args: object, **kwargs: object) -> object:
        if getattr(plan, "slide_id", "") == "s2":
            raise RuntimeError("disk full")
        return real(plan, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(build_module, "campaign_tile", broken)
    run = build(root)
    assert run.status == "not written" and run.path is None and run.exit_code == 1
    assert [o.item for o in run.failed] == ["s2"] and "disk full" in str(run.failed[0].error)
    assert list((datasets_root(root.resolve()) / "ds").iterdir()) == []


def test_copied_workspace_builds_the_same_version(
    built: tuple[SyntheticCampaign, DatasetRun], tmp_path: Path
) -> None:
    made, run = built
    copy = tmp_path / "copy"
    shutil.copytree(made.workspace, copy, ignore=shutil.ignore_patterns("datasets"))
    assert build(copy).version == run.version


def test_the_card_says_where_table1_figures_come_from(
    built: tuple[SyntheticCampaign, DatasetRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    from histocurate.dataset import card

    _, run = built
    assert run.path is not None
    text = (run.path / "card.md").read_text(encoding="utf-8")
    assert "n/a" not in text and card.NOT_FILLED in text
    assert "Table 1" in text and "not available offline" in text and "PAPER_TABLE1" in text
    monkeypatch.setitem(card.PAPER_TABLE1, "PanNuke", {"epithelial_cell": 1.5})
    assert "1 of" in card.table1_note() and "not available offline" not in card.table1_note()
    assert card._reference_cell("PanNuke", "epithelial_cell") == "1.50%"
