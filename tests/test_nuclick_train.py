"""NuClick training: patches and clicks, data loaders, and a narrow model that learns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
import torch
from scipy.io import savemat
from skimage.io import imsave

from nuclick.cli import main as nuclick_main
from nuclick.errors import NuClickError
from nuclick.model import load_model
from nuclick.testing.synthetic import toy_samples
from nuclick.train import TrainConfig, train
from nuclick.train_data import (
    NuclickPatchDataset,
    load_consep,
    load_masks_table,
    load_pannuke,
    rasterize_polygons,
)


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster than contention
    yield
    torch.set_num_threads(before)


def test_patches_clicks_and_weights() -> None:
    samples = toy_samples(3, seed=0, size=96, n_nuclei=8)
    ds = NuclickPatchDataset(samples, patch_size=64, augment=True, seed=0)
    assert len(ds) >= 15
    for item in range(len(ds)):
        inputs, target, weights = ds[item]
        assert inputs.shape == (5, 64, 64) and target.shape == (1, 64, 64)
        click = torch.nonzero(inputs[3])
        assert len(click) == 1 and target[0, click[0, 0], click[0, 1]] == 1  # inside the nucleus
        assert set(weights.unique().tolist()) <= {1.0, 2.0, 4.0}
        assert (weights[target > 0] == 2).all()
        # the exclusion map marks the other clicks only: binary, never on the target nucleus
        assert set(inputs[4].unique().tolist()) <= {0.0, 1.0}
        assert (inputs[4][target[0] > 0] == 0).all()
    plain = NuclickPatchDataset(samples, patch_size=64, augment=False)
    assert torch.equal(plain[0][0], plain[0][0])  # validation patches are fixed


def test_loaders(tmp_path: Path) -> None:
    sample = toy_samples(1, seed=1, size=64)[0]
    (tmp_path / "consep" / "Images").mkdir(parents=True)
    (tmp_path / "consep" / "Labels").mkdir()
    imsave(tmp_path / "consep" / "Images" / "train_1.png", sample.image)
    savemat(tmp_path / "consep" / "Labels" / "train_1.mat", {"inst_map": sample.inst_map})
    consep = load_consep(tmp_path / "consep")
    assert np.array_equal(consep[0].inst_map, sample.inst_map)
    masks = np.zeros((2, 64, 64, 6), np.float64)
    masks[0, 5:10, 5:10, 0] = 7
    masks[0, 20:30, 20:30, 3] = 7  # same id in another class channel: another nucleus
    (tmp_path / "pannuke").mkdir()
    np.save(tmp_path / "pannuke" / "images.npy", np.zeros((2, 64, 64, 3), np.float64))
    np.save(tmp_path / "pannuke" / "masks.npy", masks)
    pannuke = load_pannuke(tmp_path / "pannuke")
    assert len(pannuke) == 2 and pannuke[0].inst_map.max() == 2 and pannuke[1].inst_map.max() == 0
    with pytest.raises(NuClickError, match="PanNuke"):
        load_pannuke(tmp_path)
    square = shapely.box(10, 20, 20, 26)  # x 10-20, y 20-26 (pixel edges)
    inst = rasterize_polygons([shapely.to_wkb(square)], (40, 40))
    assert inst.sum() == 60 and inst[20, 10] == 1 and inst[26, 10] == 0
    # a nucleus cut in two pieces (MultiPolygon) keeps both pieces
    pieces = shapely.MultiPolygon([shapely.box(1, 1, 4, 4), shapely.box(30, 30, 33, 33)])
    table = pd.DataFrame(
        {"tile_id": ["t1", "t1"], "polygon": [shapely.to_wkb(square), shapely.to_wkb(pieces)]}
    )
    loaded = load_masks_table(table, lambda t: np.zeros((40, 40, 3), np.uint8))
    inst = loaded[0].inst_map
    assert loaded[0].name == "t1" and inst.max() == 2
    assert (inst == 1).sum() == 60 and (inst == 2).sum() == 18


@pytest.mark.slow
def test_narrow_model_learns_toy_nuclei(tmp_path: Path, one_thread: None) -> None:
    train_set = NuclickPatchDataset(toy_samples(30, seed=1, size=64, n_nuclei=8), patch_size=32)
    val_set = NuclickPatchDataset(
        toy_samples(5, seed=2, size=64, n_nuclei=8), patch_size=32, augment=False
    )
    config = TrainConfig(
        epochs=5,
        batch_size=8,
        lr=1e-2,
        optimizer="adam",
        width=0.125,
        steps_per_epoch=50,
        lr_patience=1,
        device="cpu",
    )
    result = train(train_set, val_set, config, tmp_path, log=lambda _: None)
    dices = [r.val_dice for r in result.history]
    assert result.initial_dice < 0.2
    assert result.best_dice > result.initial_dice + 0.4, dices
    _, info = load_model(tmp_path / "best.pt")
    assert info.width == 0.125 and info.patch_size == 32
    # resume: two more epochs continue the history
    more = train(
        train_set,
        val_set,
        config.__class__(**{**config.__dict__, "epochs": 6}),
        tmp_path,
        log=lambda _: None,
    )
    assert [r.epoch for r in more.history] == [0, 1, 2, 3, 4, 5]


def test_cli_trains_and_reports_bad_input(tmp_path: Path, one_thread: None, capsys) -> None:
    args = [
        "train",
        "--toy",
        "3",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--width",
        "0.125",
        "--patch-size",
        "32",
        "--batch-size",
        "4",
        "--steps-per-epoch",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert nuclick_main(args) == 0
    assert (tmp_path / "run" / "best.pt").is_file() and (
        tmp_path / "run" / "history.json"
    ).is_file()
    assert nuclick_main(["train", "--out", str(tmp_path / "x"), "--consep", str(tmp_path)]) == 2
    assert "CoNSeP" in capsys.readouterr().err
