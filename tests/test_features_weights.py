"""Encoder weights that are not weights (text, empty, other bytes, a broken safetensors
file): a `WeightsError` (the user's input) naming the file, saying what it is and what to
give instead, in one line, never torch's 15-line unpickling message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histocurate.cli.app import main
from histocurate.errors import UserInputError
from histocurate.features import WeightsError, get_encoder
from histocurate.features.weights import load_state_dict
from tests.test_embed_stage import make_workspace
from tests.test_features_encoders import _offline  # noqa: F401  (autouse: no network, no HF cache)


def _one_line(err: pytest.ExceptionInfo[WeightsError], path: Path) -> str:
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert "\n" not in text and "weights_only" not in text, text
    assert "model folder" in text and "models--<org>--<name>" in text, text  # what to give
    assert isinstance(err.value, UserInputError)
    return text


@pytest.mark.parametrize("encoder", ["h0-mini", "timm:test_vit"])
def test_a_text_file_as_weights(tmp_path: Path, encoder: str) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are my notes\nnot weights\n")
    with pytest.raises(WeightsError) as err:
        get_encoder(encoder, weights=path, device="cpu")
    text = _one_line(err, path)
    assert "not a PyTorch checkpoint file (it is text, starting 'these are my notes')" in text


def test_an_empty_file_as_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(WeightsError) as err:
        get_encoder("h0-mini", weights=path, device="cpu")
    assert "not a PyTorch checkpoint file (it is empty)" in _one_line(err, path)


def test_other_bytes_truncated_and_non_tensor_files(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(bytes(range(1, 40)))
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    assert r"(it starts with the bytes b'\x01" in _one_line(err, path)
    torch.save({"a": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    text = _one_line(err, path)
    assert "not a readable PyTorch checkpoint (RuntimeError: PytorchStreamReader" in text
    torch.save({"when": Path("x")}, path)
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    assert "(UnpicklingError: Unsupported global: GLOBAL pathlib" in _one_line(err, path)
    with pytest.raises(WeightsError) as err:
        load_state_dict(tmp_path / "gone.pt")
    assert "no such weight file" in _one_line(err, tmp_path / "gone.pt")


def test_safetensors_that_are_not(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    for content, said in (
        (b"version https://git-lfs.github.com/spec/v1\n", "it is text, starting 'version"),
        (b"", "it is empty"),
    ):
        path.write_bytes(content)
        with pytest.raises(WeightsError) as err:
            load_state_dict(path)
        assert f"not a safetensors file ({said}" in _one_line(err, path)
    save_file({"a": torch.zeros(64)}, str(path))
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    assert "not a readable safetensors file (SafetensorError: " in _one_line(err, path)


def test_cli_embed_with_a_text_file_as_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = make_workspace(tmp_path / "ws", slides=1)
    path = tmp_path / "h0.pth"
    path.write_text("hello\n")
    capsys.readouterr()
    argv = ["embed", "-w", str(ws), "--encoder", "h0-mini", "--weights", str(path)]
    assert main([*argv, "--no-prefect", "--num-workers", "0"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at the console's width
    assert f"{path.resolve()}: not a PyTorch checkpoint file (it is text, starting 'hello')" in err
    assert "Traceback" not in err and "weights_only" not in err
