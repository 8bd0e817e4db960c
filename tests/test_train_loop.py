"""The training loop on the CPU with a tiny random model: determinism, exact resume (also
after a kill mid-epoch and after a time-budget stop), NaN loss and out-of-memory stops that
name what to do and leave the saved files whole, and the run folder's files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from data_schema.train_metrics import TRAIN_METRICS
from histocurate.cellvit.checkpoint import load_checkpoint
from histocurate.cellvit.distributed import DistContext
from histocurate.cellvit.finetune import new_model
from histocurate.cellvit.guards import NaNLossError, OutOfMemoryAdvice
from histocurate.cellvit.loader import ClassMap
from histocurate.cellvit.losses import CellViTLoss, LossResult
from histocurate.cellvit.model import CellViT
from histocurate.cellvit.presets import TrainSettings, preset
from histocurate.cellvit.rundir import CheckpointMeta, RunDir, read_state
from histocurate.cellvit.train import TrainData, Trainer
from histocurate.io import read_table
from histocurate.training.metrics import ProjectMetrics
from tests.test_train_units import SIDE, DiscTiles, one_thread

CLASSES = ("a", "b", "c")
__all__ = ["one_thread"]  # the fixture, shared
pytestmark = pytest.mark.usefixtures("one_thread")


def settings(**overrides: Any) -> TrainSettings:
    base: dict[str, Any] = {
        "tile_size": SIDE,
        "decoder_divisor": 16,
        "batch_size": 4,
        "epochs": 2,
        "val_every": 1,
        "val_batch": 4,
    }
    return preset("tiny", **{**base, **overrides})


def data() -> TrainData:
    return TrainData(
        train=DiscTiles(8),
        val=DiscTiles(2, seed=9),
        weights=np.arange(1.0, 9.0),
        classes=ClassMap.of([1, 2, 3]),
        meta=CheckpointMeta(classes=CLASSES, mpp=0.25),
        input_size=SIDE,
    )


def trainer(
    path: Path, s: TrainSettings, *, model: CellViT | None = None, ctx: DistContext | None = None
) -> Trainer:
    net = model if model is not None else new_model(s, n_types=3, input_size=SIDE)
    metrics = ProjectMetrics(CLASSES)
    return Trainer(s, net, data(), RunDir(path), ctx=ctx or DistContext(), metrics=metrics)


def resumed(path: Path, s: TrainSettings) -> Trainer:
    model = load_checkpoint(path / "last.pt")[0].train()
    found = trainer(path, s, model=model)
    found.load_state(read_state(path / "last.pt")["training"])
    return found


def weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(path: Path) -> list[float]:
    frame = read_table(path / "metrics.parquet", TRAIN_METRICS)
    return frame[(frame["kind"] == "train") & (frame["metric"] == "loss")]["value"].tolist()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Two epochs in one go (the reference of the other runs)."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("straight") / "run"
    t = trainer(path, settings())
    result = t.fit()
    assert result.status == "finished" and result.epoch == 2 and result.step == 4
    return path, weights(t)


def test_two_runs_give_identical_weights(tmp_path: Path, straight: Any) -> None:
    path, reference = straight
    again = trainer(tmp_path / "again", settings())
    again.fit()
    assert same(weights(again), reference)
    assert losses(tmp_path / "again") == losses(path)
    other = trainer(tmp_path / "seed", settings(seed=5))
    other.fit()
    assert not same(weights(other), reference)  # the seed matters: the check can fail


def test_run_folder_files(straight: Any) -> None:
    path, reference = straight
    assert sorted(p.name for p in path.iterdir()) == [
        "best.pt",
        "curves.png",
        "last.pt",
        "metrics.parquet",
    ]
    model, info = load_checkpoint(path / "last.pt")
    assert info.classes == CLASSES and info.mpp == 0.25
    assert same({k: v for k, v in model.state_dict().items()}, reference)
    state = read_state(path / "last.pt")["training"]
    assert (state["epoch"], state["step"], state["images"]) == (2, 4, 16)
    best = read_state(path / "best.pt")["training"]
    assert best["best_bpq"] == state["best_bpq"]
    frame = read_table(path / "metrics.parquet", TRAIN_METRICS)
    val = frame[frame["kind"] == "validation"]
    assert sorted(val["epoch"].unique()) == [0, 1]
    assert {"bpq", "dq", "sq", "f1_detection", "f1_a", "mf1"} <= set(val["metric"])
    train = frame[frame["kind"] == "train"]
    assert sorted(train["step"].unique()) == [1, 2, 3, 4]
    assert {"loss", "np_ft", "hv_msge", "nt_ce", "lr", "images_per_s"} <= set(train["metric"])


def test_resume_continues_exactly(tmp_path: Path, straight: Any) -> None:
    path, reference = straight
    first = trainer(tmp_path / "r", settings(epochs=1))
    assert first.fit().epoch == 1
    second = resumed(tmp_path / "r", settings())
    assert second.fit().epoch == 2
    assert same(weights(second), reference)
    assert losses(tmp_path / "r") == losses(path)


class Killed(Exception):
    pass


class KillAt:
    """A progress that kills the run when it reaches step ``at``."""

    def __init__(self, at: int) -> None:
        self.at, self.done = at, 0

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.done == self.at:
            raise Killed


def test_a_run_killed_mid_epoch_loses_at_most_that_epoch(tmp_path: Path, straight: Any) -> None:
    path, reference = straight
    run = tmp_path / "k"
    t = trainer(run, settings())
    t.progress = KillAt(3)  # the first step of the second epoch
    with pytest.raises(Killed):
        t.fit()
    assert read_state(run / "last.pt")["training"]["step"] == 2  # the end of epoch 1
    again = resumed(run, settings())
    again.fit()
    assert same(weights(again), reference)
    assert losses(run) == losses(path)


def test_time_budget_stops_mid_epoch_and_resumes_exactly(tmp_path: Path, straight: Any) -> None:
    _, reference = straight
    run = tmp_path / "b"
    result = trainer(run, settings(max_minutes=1e-9)).fit()
    assert (result.status, result.step, result.epoch) == ("time budget", 1, 0)
    state = read_state(run / "last.pt")["training"]
    assert (state["epoch"], state["step_in_epoch"]) == (0, 1)
    assert result.last_validation is not None  # validated before stopping
    again = resumed(run, settings())
    again.fit()
    assert same(weights(again), reference)


def test_nan_loss_stops_names_the_step_and_tiles_and_keeps_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "n"
    trainer(run, settings(epochs=1, augment=False)).fit()
    kept = {name: digest(run / name) for name in ("last.pt", "best.pt", "metrics.parquet")}
    before = {k: v.clone() for k, v in load_checkpoint(run / "last.pt")[0].state_dict().items()}
    real = CellViTLoss.__call__

    def poisoned(self: CellViTLoss, outputs: dict[str, torch.Tensor], **kw: Any) -> LossResult:
        found = real(self, outputs, **kw)
        terms = {**found.terms, "hv_mse": torch.tensor(float("nan"))}
        return LossResult(total=found.total * float("nan"), terms=terms)

    monkeypatch.setattr(CellViTLoss, "__call__", poisoned)
    t = resumed(run, settings(augment=False))
    with pytest.raises(NaNLossError) as caught:
        t.fit()
    err = caught.value
    assert err.step == 3 and err.epoch == 1 and len(err.tiles) == 4
    assert all(f" {tile}" in str(err) for tile in err.tiles) and "hv_mse" in str(err)
    assert "step 3" in str(err) and "nan.pt" in str(err)
    assert {name: digest(run / name) for name in kept} == kept
    saved, _ = load_checkpoint(run / "nan.pt")  # the weights before the NaN step
    assert same(dict(saved.state_dict()), before)


def test_out_of_memory_says_which_micro_batch_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CellViT.forward

    def small_memory(self: CellViT, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(self, x)

    monkeypatch.setattr(CellViT, "forward", small_memory)
    run = tmp_path / "o"
    with pytest.raises(OutOfMemoryAdvice) as caught:
        trainer(run, settings(augment=False)).fit()
    assert caught.value.fits == 1
    assert "--micro-batch 1" in str(caught.value) and "global batch of 4" in str(caught.value)
    assert not (run / "last.pt").exists()


def test_fp16_scaler_and_bf16_autocast_run_on_the_cpu(tmp_path: Path) -> None:
    for precision in ("bf16", "fp16"):
        t = trainer(tmp_path / precision, settings(epochs=1, precision=precision, augment=False))
        assert t.stepper.scaler.is_enabled() == (precision == "fp16")
        result = t.fit()
        frame = pd.DataFrame(t.log.rows)
        assert result.step == 2 and np.isfinite(frame["value"].dropna()).all()
