"""`NucleiDataset`: items equal the tables, folds, one row group per item, DataLoader
workers, label-set maps, class counts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from histocurate.dataset.classes import IGNORE_TYPE, class_index
from histocurate.dataset.maps import decode_map, decode_rgb
from histocurate.dataset.reader import NucleiDataset
from histocurate.dataset.run import DatasetRun
from histocurate.dataset.synthetic import SyntheticCampaign
from histocurate.errors import UserInputError


def path_of(run: DatasetRun) -> Path:
    assert run.path is not None
    return run.path


def test_items_are_the_tiles_decoded(built: tuple[SyntheticCampaign, DatasetRun]) -> None:
    path = path_of(built[1])
    data = NucleiDataset(path)
    tiles = pd.read_parquet(path / "tiles.parquet")
    assert len(data) == len(tiles) and data.folds == [0, 1, 2]
    assert [c["index"] for c in data.classes] == list(range(1, 14))
    for k in (0, 5, len(data) - 1):
        item, row = data[k], tiles.iloc[k]
        assert item["tile_id"] == row["tile_id"] and item["fold"] == row["fold"]
        assert item["image"].dtype == np.uint8 and item["image"].shape == (
            row["height"],
            row["width"],
            3,
        )
        assert (item["image"] == decode_rgb(row["image"])).all()
        assert item["inst_map"].dtype == np.int32
        assert (item["inst_map"] == decode_map(row["inst_map"])).all()
        assert item["type_map"].dtype == np.uint8
        assert (item["type_map"] == decode_map(row["type_map"])).all()
    assert data[-1]["tile_id"] == tiles.iloc[-1]["tile_id"]
    with pytest.raises(IndexError):
        data[len(data)]


def test_folds_select_tiles_and_unknown_folds_are_named(
    built: tuple[SyntheticCampaign, DatasetRun],
) -> None:
    path = path_of(built[1])
    tiles = pd.read_parquet(path / "tiles.parquet", columns=["tile_id", "fold"])
    train = NucleiDataset(path, folds=[0, 1])
    held = NucleiDataset(path, folds=[2])
    assert len(train) + len(held) == len(tiles)
    assert {train[i]["fold"] for i in range(len(train))} == {0, 1}
    assert set(held.meta["tile_id"]) == set(tiles[tiles["fold"] == 2]["tile_id"])
    with pytest.raises(UserInputError, match=r"fold\(s\) \[3\] are not folds of this dataset"):
        NucleiDataset(path, folds=[3])
    with pytest.raises(UserInputError, match=r"no tiles\.parquet"):
        NucleiDataset(path.parent)


def test_an_item_reads_only_its_row_group(
    built: tuple[SyntheticCampaign, DatasetRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = NucleiDataset(path_of(built[1]))
    calls: list[tuple[int, list[str]]] = []
    handle = data._file()
    real = handle.read_row_group

    def spy(group: int, columns: list[str] | None = None, **kwargs: object) -> object:
        calls.append((group, list(columns or [])))
        return real(group, columns=columns)

    monkeypatch.setattr(handle, "read_row_group", spy)
    monkeypatch.setattr(handle, "read", lambda *a, **k: pytest.fail("read the whole file"))
    data[7]
    assert calls == [(7, ["image", "inst_map", "type_map"])]


def test_workers_open_their_own_handles(built: tuple[SyntheticCampaign, DatasetRun]) -> None:
    data = NucleiDataset(path_of(built[1]), folds=[0, 2])
    data[0]  # the parent holds an open handle now
    copy = pickle.loads(pickle.dumps(data))
    assert copy._handle is None and (copy[1]["inst_map"] == data[1]["inst_map"]).all()
    loader = DataLoader(data, batch_size=2, num_workers=2, shuffle=False)
    seen = []
    for batch in loader:
        assert isinstance(batch["image"], torch.Tensor) and batch["image"].dtype == torch.uint8
        seen += list(batch["tile_id"])
        for k, tile in enumerate(batch["tile_id"]):
            index = int(batch["index"][k])
            assert tile == data.meta["tile_id"][index]
            direct = data[index]["inst_map"]
            assert (
                batch["inst_map"][k].numpy()[: direct.shape[0], : direct.shape[1]] == direct
            ).all()
    assert seen == list(data.meta["tile_id"])


def test_label_sets_and_class_counts(built: tuple[SyntheticCampaign, DatasetRun]) -> None:
    path = path_of(built[1])
    data = NucleiDataset(path, label_sets=True)
    nuclei = pd.read_parquet(path / "nuclei.parquet")
    undetermined = nuclei[(nuclei["type_index"] == IGNORE_TYPE) & (nuclei["labels"].map(len) > 1)]
    assert len(undetermined)
    row = undetermined.iloc[0]
    index = list(data.meta["tile_id"]).index(row["tile_id"])
    item = data[index]
    bits = sum(1 << class_index(v) for v in row["labels"] if v != "unknown")
    assert set(np.unique(item["set_map"][item["inst_map"] == row["nucleus_id"]])) == {bits}
    typed_pixels = (item["type_map"] != IGNORE_TYPE) & (item["inst_map"] > 0)
    assert (item["set_map"][typed_pixels] == 0).all()
    counts = data.class_counts()
    assert counts.shape == (len(data), 13)
    assert counts.sum() == int((nuclei["type_index"] != IGNORE_TYPE).sum())
    first = nuclei[nuclei["tile_id"] == data.meta["tile_id"][0]]
    expected = [int((first["label"] == c["id"]).sum()) for c in data.classes]
    assert counts[0].tolist() == expected
