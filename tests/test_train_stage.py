"""`histocurate train` end to end on a tiny synthetic dataset (the tiny preset, CPU): the run
folder, resume, fine-tuning, and every bad input of issue 15: a clear message, exit code 2,
nothing already written lost."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from histocurate.cellvit.checkpoint import load_checkpoint, save_checkpoint
from histocurate.cellvit.losses import CellViTLoss, LossResult
from histocurate.cellvit.model import TINY_ARCH, CellViT, CellViTConfig, build_model
from histocurate.cellvit.rundir import read_state
from histocurate.cli.app import main
from histocurate.config import load_config
from histocurate.dataset.build import run_dataset_build
from histocurate.dataset.synthetic import SyntheticTile, write_campaign
from tests.test_train_units import one_thread

__all__ = ["one_thread"]  # the fixture, shared
pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["lymphocyte", "cancer_cell", "fibroblast", "plasmocyte"]
FAST = ["--preset", "tiny", "--device", "cpu", "--epochs", "1", "--batch-size", "4"]


def flat(text: str) -> str:
    return " ".join(text.split())


def digests(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with dataset ``syn``: 6 slides x 2 tiles of 56 px, 3 folds; and run ``ok``
    (one epoch of the tiny preset)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train") / "ws"
    tiles = [
        SyntheticTile(
            f"s{s}_t{k}", f"s{s}", side=56, spacing=28, seed=10 * s + k, unknown=1, labels=LABELS
        )
        for s in range(6)
        for k in range(2)
    ]
    write_campaign(root, tiles)
    assert run_dataset_build(load_config(root, environ={}), name="syn", source="masks").path
    code = main(
        [
            "train",
            "-w",
            str(root),
            "--dataset",
            "syn",
            "--fold",
            "0",
            "--run-name",
            "ok",
            *FAST,
            "--no-prefect",
        ]
    )
    assert code == 0
    return root


def train(ws: Path, *args: str) -> int:
    return main(["train", "-w", str(ws), *args, "--no-prefect"])


def test_a_run_writes_its_folder(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = built / "runs" / "ok"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt",
        "config.json",
        "curves.png",
        "last.pt",
        "metrics.parquet",
    ]
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["name"] == "syn" and config["fold"] == 0
    assert config["train_folds"] == [1, 2] and config["input_size"] == 56
    assert config["settings"]["preset"] == "tiny" and config["settings"]["epochs"] == 1
    model, info = load_checkpoint(run / "best.pt")
    assert len(info.classes) == 13 and info.classes[0] == "cancer_cell" and info.mpp == 0.25
    assert model.n_types == 13
    state = read_state(run / "last.pt")["training"]
    assert state["epoch"] == 1 and state["step"] >= 1


def test_resume_trains_on_and_keeps_the_run(built: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    assert train(ws, "--resume", "ok", "--epochs", "2") == 0
    state = read_state(ws / "runs" / "ok" / "last.pt")["training"]
    assert state["epoch"] == 2 and state["settings"]["epochs"] == 2


def test_cv_trains_one_run_per_held_out_fold(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    assert train(ws, "--dataset", "syn", "--cv", *FAST, "--run-name", "cv") == 0
    out = flat(capsys.readouterr().out)
    for k in range(3):
        record = json.loads((ws / "runs" / f"cv-f{k}" / "config.json").read_text())
        assert record["fold"] == k and k not in record["train_folds"]
        assert f"validation cv-f{k}" in out
    assert "3 run(s) trained, 0 failed" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "syn@ffff", "--fold", "0"], "no version 'ffff' of dataset 'syn' (versions:"),
        (["--dataset", "nope", "--fold", "0"], "no dataset 'nope'"),
        (["--dataset", "syn", "--fold", "7"], "--fold 7 is not a fold of dataset syn@"),
        (["--dataset", "syn", "--fold", "0", "--cv"], "either --fold K"),
        (["--dataset", "syn", "--fold", "0", "--run-name", "ok"], "run folder(s) ok exist"),
    ],
)
def test_bad_dataset_or_fold(
    built: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    before = digests(built / "runs" / "ok")
    assert train(built, *args, *FAST) == 2
    assert expected in flat(capsys.readouterr().err)
    assert digests(built / "runs" / "ok") == before


def test_weights_of_another_architecture_are_named(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pt"
    torch.save({"encoder.layer.0.weight": torch.zeros(3, 3)}, other)
    assert train(built, "--dataset", "syn", "--fold", "1", *FAST, "--weights", str(other)) == 2
    err = flat(capsys.readouterr().err)
    assert "missing keys: blocks.0.attn.proj.bias" in err
    assert "unexpected keys: encoder.layer.0.weight" in err
    # a whole CellViT checkpoint of other shapes: the mis-shaped keys are named too
    bare = build_model(CellViTConfig(n_types=2, tile_size=56, arch=TINY_ARCH, decoder_divisor=16))
    state = {
        k.replace("feature_extractor.model.", "feature_extractor."): v
        for k, v in bare.state_dict().items()
    }
    state["np_branch.bottleneck_upsampler.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "histoplus.pt")
    assert (
        train(
            built,
            "--dataset",
            "syn",
            "--fold",
            "1",
            *FAST,
            "--weights",
            str(tmp_path / "histoplus.pt"),
        )
        == 2
    )
    assert "np_branch.bottleneck_upsampler.bias" in flat(capsys.readouterr().err)


def _checkpoint(path: Path, classes: list[str]) -> Path:
    model = build_model(
        CellViTConfig(n_types=len(classes), tile_size=56, arch=TINY_ARCH, decoder_divisor=8)
    )
    return save_checkpoint(path, model, classes=classes, mpp=0.25)


def test_fine_tuning_maps_classes_or_refuses(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = _checkpoint(tmp_path / "two.pt", ["lymphocyte", "Cancer cell"])
    args = ["--dataset", "syn", "--fold", "2", *FAST, "--weights", str(ckpt)]
    assert train(built, *args, "--run-name", "refused") == 2
    err = flat(capsys.readouterr().err)
    assert "are not classes of the checkpoint" in err and "'fibroblast'" in err
    assert "cancer_cell <- Cancer cell" in err and "new_classes" in err
    assert not (built / "runs" / "refused" / "last.pt").exists()
    monkeypatch.setenv("HISTOCURATE_TRAIN__NEW_CLASSES", "true")
    assert train(built, *args, "--run-name", "tuned") == 0
    record = json.loads((built / "runs" / "tuned" / "config.json").read_text())
    assert "lymphocyte <- lymphocyte" in record["finetune"]["classes"]
    assert "fibroblast <- (new, random)" in record["finetune"]["classes"]


def test_fine_tuning_a_released_histoplus_state_dict(built: Path, tmp_path: Path) -> None:
    from histocurate.cellvit.checkpoint import HISTOPLUS_CLASSES, export_histoplus

    model = build_model(CellViTConfig(n_types=14, tile_size=56, arch=TINY_ARCH, decoder_divisor=8))
    bare = export_histoplus(model, tmp_path / "histoplus_cellvit_segmentor_40x.pt")
    args = ["--dataset", "syn", "--fold", "1", *FAST, "--weights", str(bare)]
    assert train(built, *args, "--run-name", "histoplus") == 0
    record = json.loads((built / "runs" / "histoplus" / "config.json").read_text())
    lines = record["finetune"]["classes"]
    assert "mitotic_figure <- Mitotic Figures" in lines  # HistoPLUS has it at 13, we at 12
    assert "smooth_muscle_cell <- Muscle Cell" in lines
    assert record["finetune"]["dropped"] == ["Minor Stromal Cell"]
    assert len(HISTOPLUS_CLASSES) == 14


def test_resume_with_other_settings_is_refused(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(built / "runs" / "ok")
    assert train(built, "--resume", "ok", "--lr", "0.5", "--seed", "3") == 2
    err = flat(capsys.readouterr().err)
    assert "lr: run 0.001, now 0.5" in err and "seed: run 111, now 3" in err
    assert train(built, "--resume", "ok", "--fold", "1") == 2
    assert "fold: run 0, now 1" in flat(capsys.readouterr().err)
    assert train(built, "--resume", "nothing") == 2
    assert "no run of that name" in flat(capsys.readouterr().err)
    assert digests(built / "runs" / "ok") == before


def test_nan_loss_exits_2_and_keeps_the_files(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    before = digests(ws / "runs" / "ok")
    real = CellViTLoss.__call__

    def poisoned(self: CellViTLoss, outputs: dict[str, torch.Tensor], **kw: Any) -> LossResult:
        found = real(self, outputs, **kw)
        return LossResult(total=found.total * float("nan"), terms=found.terms)

    monkeypatch.setattr(CellViTLoss, "__call__", poisoned)
    assert train(ws, "--resume", "ok", "--epochs", "2") == 2
    err = flat(capsys.readouterr().err)
    assert "the loss became nan at step" in err and "(epoch 1;" in err
    assert "the batch's tiles: s" in err and "nan.pt" in err
    after = digests(ws / "runs" / "ok")
    assert {k: after[k] for k in before} == before and "nan.pt" in after


def test_out_of_memory_exits_2_with_the_batch_that_fits(
    built: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CellViT.forward

    def small(self: CellViT, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return real(self, x)

    monkeypatch.setattr(CellViT, "forward", small)
    assert train(built, "--dataset", "syn", "--fold", "1", *FAST, "--run-name", "oom") == 2
    err = flat(capsys.readouterr().err)
    assert "micro-batches of 4 tiles" in err and "--micro-batch 2" in err
    assert not (built / "runs" / "oom" / "last.pt").exists()


def test_python_m_histocurate_train_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "histocurate", "train", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    text = flat(done.stdout)
    for flag in (
        "--dataset",
        "--fold",
        "--cv",
        "--encoder",
        "--weights",
        "--preset",
        "--epochs",
        "--batch-size",
        "--precision",
        "--device",
        "--resume",
        "--label-sets",
    ):
        assert flag in text
