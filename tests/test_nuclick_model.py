"""NuClick network: the published size and the public weights layout; checkpoint loading."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch

from nuclick.errors import CheckpointError
from nuclick.model import Checkpoint, NuClick, count_parameters, load_model, save_model


def _conv_bn(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    """Keys of a ConvBnRelu (conv without bias, BatchNorm) as in the public ports."""
    return {
        f"{prefix}.conv_bn_relu.0.weight": (cout, cin, k, k),
        f"{prefix}.conv_bn_relu.1.weight": (cout,),
        f"{prefix}.conv_bn_relu.1.bias": (cout,),
        f"{prefix}.conv_bn_relu.1.running_mean": (cout,),
        f"{prefix}.conv_bn_relu.1.running_var": (cout,),
        f"{prefix}.conv_bn_relu.1.num_batches_tracked": (),
    }


def _residuals(name: str, chans: list[int]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for i, (a, b) in enumerate(pairwise(chans)):
        prefix = name if len(chans) == 2 else f"{name}.{i}"
        out |= _conv_bn(f"{prefix}.conv_block_1", a, b, 3) | _conv_bn(
            f"{prefix}.conv_block_2", b, b, 3
        )
    return out


def _multiscale(name: str, cin: int, branch: int, kernels: list[int]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for i, k in enumerate(kernels, start=1):
        out |= _conv_bn(f"{name}.conv_block_{i}", cin, branch, k)
    return out


def public_layout() -> dict[str, tuple[int, ...]]:
    """The public PyTorch NuClick state_dict (nuclick_torch / TIAToolbox), from its description."""
    keys: dict[str, tuple[int, ...]] = {}
    keys |= _conv_bn("conv_block_1.0", 5, 64, 7) | _conv_bn("conv_block_1.1", 64, 32, 5)
    keys |= _conv_bn("conv_block_1.2", 32, 32, 3)
    keys |= _conv_bn("conv_block_2.0", 64, 64, 3) | _conv_bn("conv_block_2.1", 64, 32, 3)
    keys |= _conv_bn("conv_block_2.2", 32, 32, 3)
    keys |= {
        "conv_block_3.conv_bn_relu.0.weight": (1, 32, 1, 1),
        "conv_block_3.conv_bn_relu.0.bias": (1,),
    }
    keys |= _residuals("residual_block_1", [32, 64, 64]) | _residuals("residual_block_2", [64, 128])
    keys |= _residuals("residual_block_3", [128, 128])
    keys |= _residuals("residual_block_4", [128, 256, 256, 256])
    keys |= _residuals("residual_block_5", [256, 512, 512, 512])
    keys |= _residuals("residual_block_6", [512, 1024, 1024])
    keys |= _residuals("residual_block_7", [1024, 512, 256]) | _residuals(
        "residual_block_8", [512, 256]
    )
    keys |= _residuals("residual_block_9", [256, 256]) | _residuals(
        "residual_block_10", [256, 128, 128]
    )
    keys |= _residuals("residual_block_11", [128, 64]) | _residuals("residual_block_12", [64, 64])
    keys |= _multiscale("multiscale_block_1", 128, 32, [3, 3, 5, 5])
    keys |= _multiscale("multiscale_block_2", 256, 64, [3, 3, 5, 5])
    keys |= _multiscale("multiscale_block_3", 64, 16, [3, 3, 5, 7])
    for i, (a, b) in enumerate([(1024, 512), (256, 256), (256, 128), (128, 64), (64, 32)], start=1):
        keys[f"conv_transpose_{i}.weight"] = (a, b, 2, 2)
        keys[f"conv_transpose_{i}.bias"] = (b,)
    return keys


@pytest.fixture(scope="module")
def full_model() -> NuClick:
    return NuClick()


def test_published_size_and_layout(full_model: NuClick) -> None:
    assert count_parameters(full_model) == 66_800_321
    expected = public_layout()
    assert len(expected) == 360
    state = full_model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_loads_public_state_dict_and_runs(full_model: NuClick, tmp_path: Path) -> None:
    torch.manual_seed(0)
    public = {
        k: (torch.zeros(()) if not shape else torch.randn(shape)).to(
            torch.int64 if k.endswith("num_batches_tracked") else torch.float32
        )
        for k, shape in public_layout().items()
    }
    public = {k: v.abs() if "running_var" in k else v for k, v in public.items()}
    path = tmp_path / "public.pth"
    torch.save({f"module.{k}": v for k, v in public.items()}, path)  # as saved from DDP
    model, info = load_model(path)
    assert info.width == 1.0 and info.mpp == 0.25
    assert torch.equal(
        model.state_dict()["conv_transpose_3.weight"], public["conv_transpose_3.weight"]
    )
    with torch.no_grad():
        out = model(torch.rand(1, 5, 64, 96))
    assert out.shape == (1, 1, 64, 96)


def test_missing_keys_are_listed(tmp_path: Path) -> None:
    state = NuClick(width=0.125).state_dict()
    del state["residual_block_5.1.conv_block_2.conv_bn_relu.0.weight"]
    del state["conv_transpose_2.bias"]
    with pytest.raises(CheckpointError) as err:
        load_model(state)
    message = str(err.value)
    assert "2 missing key(s)" in message
    assert "conv_transpose_2.bias" in message and "residual_block_5.1.conv_block_2" in message


def test_foreign_and_absent_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(bad)


def test_narrow_round_trip(tmp_path: Path) -> None:
    model = NuClick(width=0.25)
    save_model(tmp_path / "m.pt", model, Checkpoint(width=0.25, mpp=0.5, patch_size=64))
    loaded, info = load_model(tmp_path / "m.pt")
    assert (info.width, info.mpp, info.patch_size) == (0.25, 0.5, 64)
    assert count_parameters(loaded) == count_parameters(model)


def test_input_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        NuClick(width=0.125)(torch.zeros(1, 5, 40, 64))
