"""Training pieces on their own: presets, the step sampler shared by ranks and micro-steps,
class maps, the project's validation metrics; and `DiscTiles`, the small in-memory dataset
the other training tests train on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from histocurate.cellvit.distributed import StepBatches
from histocurate.cellvit.loader import ClassMap
from histocurate.cellvit.presets import preset
from histocurate.cellvit.targets import IGNORE_TYPE
from histocurate.cellvit.validate import ValTile, pad_to
from histocurate.errors import UserInputError
from histocurate.training.metrics import ProjectMetrics

SIDE = 56


class DiscTiles(Dataset[dict[str, Any]]):
    """``n`` tiles of ``side`` px: purple discs (types 1..3, one undetermined with the label
    set {1, 2}) on pink, with noise; the items of `histocurate.dataset.NucleiDataset`."""

    def __init__(self, n: int, *, side: int = SIDE, seed: int = 0) -> None:
        self.n, self.side, self.seed = n, side, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, index])
        s = self.side
        inst = np.zeros((s, s), np.int32)
        types = np.zeros((s, s), np.uint8)
        sets = np.zeros((s, s), np.int32)
        yy, xx = np.mgrid[:s, :s]
        for k in range(1, 5):
            cy, cx = rng.integers(8, s - 8, size=2)
            r = rng.integers(4, 7)
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)
            inst[disc] = k
            types[disc] = IGNORE_TYPE if k == 4 else 1 + (k % 3)
            if k == 4:
                sets[disc] = (1 << 1) | (1 << 2)
        image = np.empty((s, s, 3), np.float32)
        image[:] = (235, 170, 205)
        image[inst > 0] = (95, 50, 140)
        image += rng.normal(0, 10, image.shape).astype(np.float32)
        return {
            "image": np.clip(image, 0, 255).astype(np.uint8),
            "inst_map": inst,
            "type_map": types,
            "set_map": sets,
            "tile_id": f"t{index}",
            "mpp": 0.25,
            "fold": 0,
            "indication": "LUAD",
        }


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread (the machine is shared: two threads contend with other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_presets_are_the_issues() -> None:
    paper = preset("paper")
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.betas) == (
        "adam",
        1e-5,
        1e-5,
        (0.9, 0.99),
    )
    assert paper.lr_decay is None and paper.batch_size == 16 and paper.epochs == 150
    assert (paper.val_every, paper.seed, paper.tile_size, paper.encoder) == (
        10,
        111,
        448,
        "h0-mini",
    )
    assert paper.pretrained and paper.oversampling_gamma == 0.85
    cellvit = preset("cellvit")
    assert (cellvit.optimizer, cellvit.lr, cellvit.betas, cellvit.weight_decay) == (
        "adamw",
        3e-4,
        (0.85, 0.95),
        1e-4,
    )
    assert cellvit.lr_decay == 0.95 and cellvit.freeze_encoder_epochs == 25
    tiny = preset("tiny")
    assert not tiny.pretrained and tiny.arch["embed_dim"] == 64 and tiny.tile_size is None


def test_settings_refuse_unknown_keys_and_bad_batches() -> None:
    with pytest.raises(UserInputError, match="unknown setting 'epoch'"):
        preset("tiny", epoch=3)
    with pytest.raises(UserInputError, match="micro_batch 8 > batch_size 4"):
        preset("tiny", batch_size=4, micro_batch=8)
    with pytest.raises(UserInputError, match="multiple of 3"):
        preset("tiny", batch_size=8).accumulation(3)
    assert preset("tiny", batch_size=8, micro_batch=2).accumulation(2) == (2, 2)


def test_ranks_and_micro_steps_share_one_weighted_draw() -> None:
    weights = np.arange(1, 13, dtype=float)
    one = StepBatches(weights, batch_size=4, micro_batch=2, seed=5)
    ranks = [
        StepBatches(weights, batch_size=4, micro_batch=2, seed=5, rank=r, world_size=2)
        for r in (0, 1)
    ]
    whole = one._draw.epoch_indices(0).tolist()
    for step in range(one.steps_per_epoch):
        alone = one.micro_batches(0, step)
        assert [[d[1] for d in m] for m in alone] == [
            [4 * step, 4 * step + 2],
            [4 * step + 1, 4 * step + 3],
        ]
        # micro-step a of one process = rank a of two: the same tiles, the same order
        assert [r.micro_batches(0, step)[0] for r in ranks] == alone
        assert sorted(d[2] for m in alone for d in m) == sorted(whole[4 * step : 4 * step + 4])
    ranks[1].set_position(0, 2)
    assert [m for m in ranks[1]] == [ranks[1].micro_batches(0, 2)[0]]
    assert one.micro_batches(1, 0) != one.micro_batches(0, 0)  # a new draw each epoch


def test_class_map_moves_types_and_label_sets() -> None:
    cm = ClassMap.of([1, 14])  # dataset values 1 and 14 -> channels 1 and 2
    assert cm.types(np.array([0, 1, 14, 2, 255])).tolist() == [0, 1, 2, 255, 255]
    assert cm.bits(np.array([(1 << 14) | (1 << 3)])).tolist() == [1 << 2]
    with pytest.raises(ValueError, match="distinct"):
        ClassMap.of([1, 1])


def test_pad_to_patch_multiple() -> None:
    padded, size = pad_to(torch.zeros(1, 3, 50, 56), 14)
    assert tuple(padded.shape) == (1, 3, 56, 56) and size == (50, 56)


def _tile(pred_inst: np.ndarray, cells: pd.DataFrame, *, sets: bool = False) -> ValTile:
    item = DiscTiles(1)[0]
    return ValTile(
        tile_id="t0",
        mpp=0.25,
        true_inst=item["inst_map"],
        true_types=item["type_map"],
        true_sets=item["set_map"] if sets else None,
        pred_inst=pred_inst,
        cells=cells,
    )


def _cells_of(inst: np.ndarray, types: np.ndarray) -> pd.DataFrame:
    rows = []
    for k in range(1, int(inst.max()) + 1):
        r, c = np.nonzero(inst == k)
        rows.append({"x": c.mean() + 0.5, "y": r.mean() + 0.5, "type": int(types[r[0], c[0]])})
    return pd.DataFrame(rows, columns=["x", "y", "type"])


def test_project_metrics_perfect_and_empty_predictions() -> None:
    metrics = ProjectMetrics(["a", "b", "c"])
    item = DiscTiles(1)[0]
    inst, types = item["inst_map"], item["type_map"].copy()
    types[types == IGNORE_TYPE] = 1  # the model predicts some type for it
    perfect = metrics.summarise([metrics.score_tile(_tile(inst, _cells_of(inst, types)))])
    assert perfect["bpq"] == perfect["dq"] == perfect["sq"] == 1.0
    assert perfect["f1_detection"] == 1.0
    assert all(perfect[f"f1_{c}"] == 1.0 for c in "bc" if not np.isnan(perfect[f"f1_{c}"]))
    empty = pd.DataFrame(columns=["x", "y", "type"])
    nothing = metrics.summarise([metrics.score_tile(_tile(np.zeros_like(inst), empty))])
    assert nothing["bpq"] == nothing["dq"] == 0.0 and nothing["f1_detection"] == 0.0


def test_undetermined_nuclei_count_through_their_label_set() -> None:
    metrics = ProjectMetrics(["a", "b", "c"])
    item = DiscTiles(1)[0]
    inst, types = item["inst_map"], item["type_map"].copy()
    types[types == IGNORE_TYPE] = 2  # type 2 is in the undetermined nucleus' set {1, 2}
    cells = _cells_of(inst, types)
    without = metrics.score_tile(_tile(inst, cells)).counts
    with_sets = metrics.score_tile(_tile(inst, cells, sets=True)).counts
    # the set makes the prediction 2 a true positive of class b (index 1); without it, the
    # undetermined nucleus counts for detection only
    assert with_sets[1, 0] == without[1, 0] + 1


def test_input_size_follows_the_preset_crop_and_patch() -> None:
    from histocurate.training.inputs import DatasetChoice, input_size

    choice = DatasetChoice(
        name="d",
        version="v",
        path=Path("."),
        content_hash="",
        folds=(0, 1),
        classes=(),
        mpp=0.25,
        tile_size=None,
    )
    tiny, paper = preset("tiny"), preset("paper")
    assert input_size(tiny, choice, 448, 14) == 112  # random crops of the 448 px tiles
    assert input_size(tiny, choice, 56, 14) == 56 and input_size(tiny, choice, 60, 14) == 56
    assert input_size(paper, choice, 448, 14) == 448 and input_size(paper, choice, 500, 14) == 448
    with pytest.raises(UserInputError, match="tiles of 224 px, smaller than the 448 px"):
        input_size(paper, choice, 224, 14)
