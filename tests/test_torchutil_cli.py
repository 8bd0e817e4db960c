"""A device this machine lacks: every torch command says so (exit 2, no traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histocurate.cli.app import main
from histocurate.torchutil import DeviceError, resolve_device
from nuclick.model import Checkpoint, NuClick, save_model
from nuclick.predict import resolve_device as nuclick_resolve_device
from tests.test_embed_stage import make_workspace

MISSING = "cuda:3"
pytestmark = pytest.mark.skipif(torch.cuda.device_count() > 3, reason="this machine has a cuda:3")


def _says_the_device(err: str) -> None:
    assert f"--device {MISSING}" in err, err
    assert "Traceback" not in err, err


def test_the_packages_share_one_device_check() -> None:
    assert nuclick_resolve_device is resolve_device
    with pytest.raises(DeviceError, match=f"--device {MISSING}"):
        nuclick_resolve_device(MISSING)


def test_segment_with_nuclick_on_a_missing_gpu(
    segment_workspace: tuple[Path, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = segment_workspace
    ckpt = tmp_path / "tiny.pt"
    save_model(ckpt, NuClick(width=0.0625), Checkpoint(width=0.0625, patch_size=64))
    args = ["segment", "-w", str(root), "--segmenter", "nuclick", "--checkpoint", str(ckpt)]
    assert main([*args, "--device", MISSING, "--no-prefect"]) == 2
    _says_the_device(capsys.readouterr().err)


def test_embed_on_a_missing_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = make_workspace(tmp_path / "ws", slides=1)
    capsys.readouterr()
    assert main(["embed", "-w", str(ws), "--device", MISSING, "--no-prefect"]) == 2
    _says_the_device(capsys.readouterr().err)
