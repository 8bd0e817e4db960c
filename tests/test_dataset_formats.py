"""Exchange formats, on tiny files of each format written here: PanNuke folds, CoNSeP and
Lizard .mat files; PanNuke and QuPath GeoJSON exports; round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image
from scipy.io import savemat

from histocurate.config import load_config
from histocurate.dataset.classes import IGNORE_TYPE, class_index
from histocurate.dataset.formats import export_dataset, run_dataset_import
from histocurate.dataset.formats.pannuke import pannuke_channel
from histocurate.dataset.maps import decode_map, decode_rgb, resample_map
from histocurate.dataset.run import DatasetRun
from histocurate.dataset.store import datasets_root, resolve_dataset
from histocurate.errors import UserInputError
from histocurate.workspace import init_workspace
from tests.test_dataset_build import build, make_workspace


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two instance maps with the same nuclei, whatever their ids."""
    if ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def blobs(rng: np.random.Generator, side: int, n: int) -> np.ndarray:
    """An instance map of ``n`` separate discs."""
    yy, xx = np.mgrid[:side, :side]
    inst = np.zeros((side, side), dtype=np.int64)
    centres = rng.permutation(
        [(r, c) for r in range(6, side - 5, 11) for c in range(6, side - 5, 11)]
    )
    for k, (r, c) in enumerate(centres[:n], start=1):
        inst[(yy - r) ** 2 + (xx - c) ** 2 <= int(rng.integers(9, 17))] = k
    return inst


def pannuke_folder(root: Path, *, images_per_fold: int = 3, side: int = 48) -> dict:
    """Two PanNuke folds in the official layout; returns the arrays written."""
    rng = np.random.default_rng(0)
    written = {}
    for fold in (1, 2):
        images = rng.uniform(0, 255, (images_per_fold, side, side, 3))
        masks = np.zeros((images_per_fold, side, side, 6))
        for i in range(images_per_fold):
            inst = blobs(rng, side, 12)
            channel = rng.integers(0, 5, int(inst.max()) + 1)
            for j in range(5):  # ids restart in every channel, as in PanNuke
                ids = np.flatnonzero(channel == j)
                ids = ids[ids > 0]
                lut = np.zeros(int(inst.max()) + 1)
                lut[ids] = np.arange(1, len(ids) + 1)
                masks[i, ..., j] = lut[inst]
            masks[i, ..., 5] = inst == 0
        types = np.array(["Breast", "Colon", "Lung"][:images_per_fold])
        img_dir = root / f"Fold {fold}" / "images" / f"fold{fold}"
        msk_dir = root / f"Fold {fold}" / "masks" / f"fold{fold}"
        img_dir.mkdir(parents=True)
        msk_dir.mkdir(parents=True)
        np.save(img_dir / "images.npy", images)
        np.save(img_dir / "types.npy", types)
        np.save(msk_dir / "masks.npy", masks)
        written[fold] = (images, masks, types)
    return written


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "ws"
    init_workspace(root, load_config(root, environ={}, require_file=False))
    return load_config(root, environ={})


def tiles_of(run: DatasetRun) -> pd.DataFrame:
    assert run.path is not None
    return pd.read_parquet(run.path / "tiles.parquet").set_index("tile_id")


def test_pannuke_import_keeps_folds_pixels_and_classes(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written = pannuke_folder(tmp_path / "pannuke")
    run = run_dataset_import(config, "pannuke", tmp_path / "pannuke", name="pn")
    assert run.status == "built" and run.exit_code == 0
    tiles = tiles_of(run)
    assert len(tiles) == 6 and sorted(tiles["fold"].unique()) == [0, 1]
    assert run.info["folds"]["official"] and run.info["mpp"] == 0.25
    # a folder outside the workspace stays absolute; one inside it is recorded relative
    assert run.info["provenance"]["directory"] == str((tmp_path / "pannuke").resolve())
    pannuke_folder(config.workspace / "incoming")
    inside = run_dataset_import(config, "pannuke", config.workspace / "incoming", name="pn-in")
    assert inside.info["provenance"]["directory"] == "incoming"
    assert [c["id"] for c in run.info["classes"]] == [
        "cancer_cell",
        "epithelial_cell",
        "inflammatory",
        "connective",
        "dead",
    ]
    for fold, (images, masks, types) in written.items():
        for i in range(len(images)):
            row = tiles.loc[f"pannuke-f{fold}-{i:05d}"]
            assert row["fold"] == fold - 1 and row["indication"] == types[i]
            assert (decode_rgb(row["image"]) == np.rint(images[i]).astype(np.uint8)).all()
            inst, kinds = decode_map(row["inst_map"]), decode_map(row["type_map"])
            merged = sum(
                (masks[i, ..., j] > 0) * (1000 * (j + 1) + masks[i, ..., j]) for j in range(5)
            )
            assert same_partition(inst, merged.astype(np.int64))
            for j, label in enumerate(
                ["cancer_cell", "inflammatory", "connective", "dead", "epithelial_cell"]
            ):
                assert (kinds[masks[i, ..., j] > 0] == class_index(label)).all()
    again = run_dataset_import(config, "pannuke", tmp_path / "pannuke", name="pn")
    assert again.status == "up to date" and again.version == run.version


def test_pannuke_export_round_trips(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written = pannuke_folder(tmp_path / "pannuke")
    run = run_dataset_import(config, "pannuke", tmp_path / "pannuke", name="pn")
    version = resolve_dataset(datasets_root(config.workspace), "pn")
    counts = export_dataset(version, "pannuke", tmp_path / "out")
    assert counts["tiles"] == 6 and counts["left_out"] == 0
    for fold, (images, masks, types) in written.items():
        base = tmp_path / "out" / f"Fold {fold}"
        out_masks = np.load(base / "masks" / f"fold{fold}" / "masks.npy")
        out_images = np.load(base / "images" / f"fold{fold}" / "images.npy")
        assert out_masks.shape == masks.shape and out_images.dtype == np.uint8
        assert (np.load(base / "images" / f"fold{fold}" / "types.npy") == types).all()
        for i in range(len(images)):
            for j in range(5):
                assert same_partition(
                    out_masks[i, ..., j].astype(np.int64), masks[i, ..., j].astype(np.int64)
                )
            assert (out_masks[i, ..., 5] == masks[i, ..., 5]).all()
    back = run_dataset_import(config, "pannuke", tmp_path / "out", name="pn-again")
    for tile, row in tiles_of(back).iterrows():
        original = tiles_of(run).loc[tile]
        assert same_partition(
            decode_map(row["inst_map"]).astype(np.int64),
            decode_map(original["inst_map"]).astype(np.int64),
        )
        assert (decode_map(row["type_map"]) == decode_map(original["type_map"])).all()


def test_pannuke_bad_folders_name_file_and_key(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pannuke_folder(tmp_path / "pannuke")
    types = tmp_path / "pannuke" / "Fold 2" / "images" / "fold2" / "types.npy"
    np.save(types, np.array(["Breast", "Colon"]))
    with pytest.raises(
        UserInputError,
        match=r"Fold 2: mismatched array lengths: images.npy "
        r"has 3 images, masks.npy 3, types.npy 2",
    ):
        run_dataset_import(config, "pannuke", tmp_path / "pannuke", name="pn")
    (tmp_path / "pannuke" / "Fold 2" / "masks" / "fold2" / "masks.npy").unlink()
    with pytest.raises(UserInputError, match=r"Fold 2: no masks\.npy"):
        run_dataset_import(config, "pannuke", tmp_path / "pannuke", name="pn")
    assert not (datasets_root(config.workspace) / "pn").exists() or not any(
        (datasets_root(config.workspace) / "pn").iterdir()
    )


def mat_folder(root: Path, fmt: str, *, side: int = 40) -> dict[str, tuple]:
    """CoNSeP (Train/Test, inst_type) or Lizard (info.csv, class and id) files."""
    rng = np.random.default_rng(1)
    written = {}
    names = {
        "consep": ["Train/train_1", "Train/train_2", "Test/test_1"],
        "lizard": ["crag_1", "crag_2", "dpath_1"],
    }[fmt]
    for name in names:
        folder, stem = name.rsplit("/", 1) if "/" in name else ("", name)
        inst = blobs(rng, side, 6)
        if fmt == "lizard":  # non-consecutive ids, with an `id` column
            inst = np.where(inst > 0, inst * 3 + 1, 0)
        ids = np.unique(inst[inst > 0])
        classes = rng.integers(1, 8 if fmt == "consep" else 7, len(ids))
        rgb = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        (root / folder / "Images").mkdir(parents=True, exist_ok=True)
        (root / folder / "Labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / folder / "Images" / f"{stem}.png")
        if fmt == "consep":
            data = {
                "inst_map": inst.astype(np.float64),
                "type_map": inst * 0,
                "inst_type": classes.reshape(-1, 1).astype(np.float64),
                "inst_centroid": np.zeros((len(ids), 2)),
            }
        else:
            data = {
                "inst_map": inst.astype(np.int32),
                "class": classes.reshape(-1, 1),
                "id": ids.reshape(-1, 1),
                "centroid": np.zeros((len(ids), 2)),
            }
        savemat(root / folder / "Labels" / f"{stem}.mat", data)
        written[stem] = (rgb, inst, dict(zip(ids.tolist(), classes.tolist(), strict=True)))
    if fmt == "lizard":
        pd.DataFrame(
            {
                "Filename": ["crag_1", "crag_2", "dpath_1"],
                "Source": ["crag"] * 2 + ["dpath"],
                "Split": [1, 2, 3],
            }
        ).to_csv(root / "info.csv", index=False)
    return written


def test_consep_import_maps_classes_and_keeps_the_split(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from histocurate.dataset.classes import CONSEP_CLASSES

    written = mat_folder(tmp_path / "consep", "consep")
    run = run_dataset_import(config, "consep", tmp_path / "consep", name="consep")
    tiles = tiles_of(run)
    assert dict(zip(tiles.index, tiles["fold"], strict=True)) == {
        "consep-0-train_1": 0,
        "consep-0-train_2": 0,
        "consep-1-test_1": 1,
    }
    assert (tiles["mpp"] == 0.25).all() and not tiles["resampled"].any()
    assert run.path is not None
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    for tile, row in tiles.iterrows():
        rgb, inst, classes = written[str(tile).split("-", 2)[2]]
        assert (decode_rgb(row["image"]) == rgb).all()
        assert same_partition(decode_map(row["inst_map"]).astype(np.int64), inst)
        mine = nuclei[nuclei["tile_id"] == tile]
        assert dict(zip(mine["source_id"], mine["label"], strict=True)) == {
            i: CONSEP_CLASSES[c] for i, c in classes.items()
        }


def test_lizard_import_resamples_20x_and_reads_info_csv(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from histocurate.dataset.classes import LIZARD_CLASSES

    written = mat_folder(tmp_path / "lizard", "lizard")
    run = run_dataset_import(config, "lizard", tmp_path / "lizard", name="lizard")
    tiles = tiles_of(run)
    assert sorted(tiles["fold"]) == [0, 1, 2] and set(tiles["cohort"]) == {"crag", "dpath"}
    assert run.path is not None
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    for tile, row in tiles.iterrows():
        _, inst, classes = written[str(tile).split("-", 2)[2]]
        assert row["resampled"] and (row["width"], row["height"]) == (80, 80)
        assert row["source_mpp"] == 0.5 and row["mpp"] == 0.25
        assert same_partition(
            decode_map(row["inst_map"]).astype(np.int64), resample_map(inst, (80, 80))
        )
        mine = nuclei[nuclei["tile_id"] == tile]
        assert dict(zip(mine["source_id"], mine["label"], strict=True)) == {
            i: LIZARD_CLASSES[c] for i, c in classes.items()
        }


def test_mat_files_without_their_keys_are_named(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mat_folder(tmp_path / "consep", "consep")
    path = tmp_path / "consep" / "Test" / "Labels" / "test_1.mat"
    savemat(path, {"type_map": np.zeros((4, 4))})
    with pytest.raises(UserInputError, match=r"test_1.mat: no 'inst_map' key \(keys: type_map\)"):
        run_dataset_import(config, "consep", tmp_path / "consep", name="consep")
    savemat(path, {"inst_map": np.ones((4, 4)) * 2, "inst_type": np.ones((1, 1))})
    with pytest.raises(UserInputError, match=r"instance id\(s\) \[2\] of 'inst_map' have no row"):
        run_dataset_import(config, "consep", tmp_path / "consep", name="consep")


def test_geojson_export_has_one_feature_per_nucleus(tmp_path: Path) -> None:
    make_workspace(tmp_path / "ws")
    run = build(tmp_path / "ws")
    assert run.path is not None
    version = resolve_dataset(datasets_root((tmp_path / "ws").resolve()), f"ds@{run.version}")
    counts = export_dataset(version, "geojson", tmp_path / "geojson")
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    files = sorted((tmp_path / "geojson").glob("*.geojson"))
    assert len(files) == run.info["counts"]["tiles"] and counts["exported"] == len(nuclei)
    found = 0
    for path in files:
        collection = json.loads(path.read_text())
        mine = nuclei[nuclei["tile_id"] == path.stem].set_index("nucleus_id")
        for feature in collection["features"]:
            props = feature["properties"]
            row = mine.loc[props["nucleus_id"]]
            shape = shapely.geometry.shape(feature["geometry"])
            original = shapely.from_wkb(row["polygon"])
            assert shape.intersection(original).area / shape.union(original).area > 0.99
            name = props["classification"]["name"]
            if row["type_index"] == IGNORE_TYPE:
                assert name in ("Undetermined", "Cell with unknown type")
            else:
                assert name != "Undetermined"
            found += 1
    assert found == len(nuclei)
    with pytest.raises(UserInputError, match="not empty"):
        export_dataset(version, "geojson", tmp_path / "geojson")


def test_a_built_dataset_goes_through_pannuke(tmp_path: Path) -> None:
    make_workspace(tmp_path / "ws")
    run = build(tmp_path / "ws")
    root = datasets_root((tmp_path / "ws").resolve())
    counts = export_dataset(resolve_dataset(root, "ds"), "pannuke", tmp_path / "out")
    assert run.path is not None
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    channels = [
        pannuke_channel(a, b) for a, b in zip(nuclei["label"], nuclei["labels"], strict=True)
    ]
    assert counts["left_out"] == sum(c is None for c in channels) > 0
    assert counts["exported"] == sum(c is not None for c in channels)
    # red blood cells have no PanNuke class; lymphocytes go to Inflammatory
    assert pannuke_channel("red_blood_cell", ["red_blood_cell"]) is None
    assert pannuke_channel(None, ["lymphocyte", "plasmocyte"]) == 1
    assert pannuke_channel(None, ["lymphocyte", "fibroblast"]) is None
    from histocurate.dataset.classes import PANNUKE_CLASSES

    config = load_config(tmp_path / "ws", environ={})
    back = tiles_of(run_dataset_import(config, "pannuke", tmp_path / "out", name="back"))
    assert run.path is not None
    built = pd.read_parquet(run.path / "tiles.parquet")
    assert len(back) == len(built)
    for row in built.itertuples(index=False):
        fold = int(row.fold) + 1
        rank = list(built[built["fold"] == row.fold]["tile_id"]).index(row.tile_id)
        other = back.loc[f"pannuke-f{fold}-{rank:05d}"]
        inst = decode_map(row.inst_map).astype(np.int64)
        mine = nuclei[nuclei["tile_id"] == row.tile_id].set_index("nucleus_id")
        channel = np.full(int(inst.max()) + 1, -1)
        for nucleus, item in mine.iterrows():
            found = pannuke_channel(item["label"], item["labels"])
            channel[int(nucleus)] = -1 if found is None else found
        kept = np.where(channel[inst] >= 0, inst, 0)
        assert same_partition(decode_map(other["inst_map"]).astype(np.int64), kept)
        expected = np.zeros_like(inst)
        for j, label in PANNUKE_CLASSES.items():
            expected[channel[inst] == j] = class_index(label)
        assert (decode_map(other["type_map"]) == expected).all()
        assert (decode_rgb(other["image"]) == decode_rgb(row.image)).all()


def read_like_cellvit(
    root: Path, fold: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What CellViT's PanNukeDataset reads of ``fold``: image, inst_map, type_map per name
    (``fold{k}/images/*.png`` with ``labels/{stem}.npy`` loaded with allow_pickle and
    ``[()]``), the same way its loader does."""
    base = root / f"fold{fold}"
    out = {}
    for image in sorted((base / "images").glob("*.png")):
        mask = np.load(base / "labels" / f"{image.stem}.npy", allow_pickle=True)
        inst = mask[()]["inst_map"].astype(np.int32)
        kind = mask[()]["type_map"].astype(np.int32)
        out[image.name] = (np.array(Image.open(image)).astype(np.uint8), inst, kind)
    return out


def test_a_built_dataset_goes_through_cellvit(tmp_path: Path) -> None:
    from histocurate.dataset.formats.cellvit import cellvit_type

    make_workspace(tmp_path / "ws")
    run = build(tmp_path / "ws")
    assert run.path is not None
    version = resolve_dataset(datasets_root((tmp_path / "ws").resolve()), "ds")
    counts = export_dataset(version, "cellvit", tmp_path / "cv")
    out = tmp_path / "cv"
    tiles = pd.read_parquet(run.path / "tiles.parquet").set_index("tile_id")
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    classes = sorted(version.info()["classes"], key=lambda c: int(c["index"]))
    renumber = {int(c["index"]): k for k, c in enumerate(classes, start=1)}
    config_text = (out / "dataset_config.yaml").read_text(encoding="utf-8")
    assert "nuclei_types:" in config_text and '"Background": 0' in config_text
    for k, c in enumerate(classes, start=1):
        assert f"{json.dumps(c['name'])}: {k}" in config_text
    assert counts["tiles"] == len(tiles) and counts["left_out"] == 0
    assert counts["exported"] + counts["untyped"] == len(nuclei)
    assert counts["untyped"] == int(nuclei["label"].isna().sum()) > 0  # undetermined ones
    seen = 0
    for fold in sorted(tiles["fold"].unique()):
        items = read_like_cellvit(out, int(fold))
        types = pd.read_csv(out / f"fold{fold}" / "types.csv").set_index("img")["type"]
        cells = pd.read_csv(out / f"fold{fold}" / "cell_count.csv", index_col=0)
        traced = pd.read_csv(out / f"fold{fold}" / "tiles.csv").set_index("img")
        assert list(cells.columns) == [c["name"] for c in classes]
        assert set(items) == set(types.index) == set(cells.index) == set(traced.index)
        for name, (image, inst, kind) in items.items():
            assert name.startswith(f"{fold}_")
            row = tiles.loc[traced.loc[name, "tile_id"]]
            assert int(row["fold"]) == fold and types[name] == row["indication"]
            ours_type = decode_map(row["type_map"]).astype(np.int64)
            assert (image == decode_rgb(row["image"])).all()
            assert (inst == decode_map(row["inst_map"])).all()
            lut = np.zeros(256, dtype=np.int64)
            for index, k in renumber.items():
                lut[index] = k
            assert (kind == lut[ours_type]).all()  # ignore (255) -> 0, classes renumbered
            assert kind.max() <= len(classes)
            mine = nuclei[nuclei["tile_id"] == row.name]
            expected = np.zeros(len(classes) + 1, dtype=np.int64)
            for label in mine["label"].dropna():
                expected[renumber[class_index(label)]] += 1
            assert (cells.loc[name].to_numpy() == expected[1:]).all()
            seen += 1
    assert seen == len(tiles)
    # PanNuke's five classes, CellViT's PanNuke indices (1 Neoplastic .. 5 Epithelial)
    five = export_dataset(version, "cellvit", tmp_path / "cv5", classes="pannuke")
    columns = pd.read_csv(tmp_path / "cv5" / "fold0" / "cell_count.csv", index_col=0).columns
    assert list(columns) == ["Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"]
    channels = [
        pannuke_channel(a, b) for a, b in zip(nuclei["label"], nuclei["labels"], strict=True)
    ]
    assert five["exported"] == sum(c is not None for c in channels)
    assert cellvit_type("lymphocyte", ["lymphocyte"], {"lymphocyte": 2}) == 2
    assert cellvit_type(None, ["lymphocyte", "unknown"], {"lymphocyte": 2}) == 2
    assert cellvit_type(None, ["lymphocyte", "fibroblast"], {"lymphocyte": 2}) == 0
    with pytest.raises(UserInputError, match="not empty"):
        export_dataset(version, "cellvit", tmp_path / "cv")
