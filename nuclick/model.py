"""The NuClick network (Koohbanani et al., 2020): a residual U-Net with multi-scale blocks.

Input (N, 5, H, W): RGB / 255, inclusion map, exclusion map (H, W multiples of 32).
Output: logits (N, 1, H, W); the sigmoid is applied outside the model.

Module names and shapes follow the public PyTorch ports (the authors' nuclick_torch and
TIAToolbox), so their state_dicts (360 keys, 66,800,321 parameters at ``width=1``) load
as they are. ``width`` scales every channel count, for small models in tests and on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histocurate.torchutil import atomic_save
from nuclick.errors import CheckpointError

BN_EPS = 1.001e-5
IN_CHANNELS = 5
DEFAULT_MPP = 0.25  # the public NuClick models were trained on 40x data (CoNSeP, PanNuke)


class ConvBnRelu(nn.Module):
    """Conv ("same" padding) -> optional BatchNorm -> optional ReLU, in one `conv_bn_relu`."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        *,
        dilation: int = 1,
        batchnorm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_ch, out_ch, kernel, padding="same", dilation=dilation, bias=bias)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        layers: list[nn.Module] = [conv]
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_ch, eps=BN_EPS))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.conv_bn_relu = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv_bn_relu(x)
        return out


class ResidualBlock(nn.Module):
    """Two Conv-BN; the skip adds the *first* conv's output (as published), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv_block_1 = ConvBnRelu(in_ch, out_ch, relu=False)
        self.conv_block_2 = ConvBnRelu(out_ch, out_ch, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_block_1(x)
        return torch.relu(first + self.conv_block_2(first))


class MultiScaleBlock(nn.Module):
    """Four parallel ConvBnRelu branches (own kernel and dilation each), concatenated."""

    def __init__(
        self, in_ch: int, branch_ch: int, kernels: tuple[int, ...], dilations: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.conv_block_1 = ConvBnRelu(in_ch, branch_ch, kernels[0], dilation=dilations[0])
        self.conv_block_2 = ConvBnRelu(in_ch, branch_ch, kernels[1], dilation=dilations[1])
        self.conv_block_3 = ConvBnRelu(in_ch, branch_ch, kernels[2], dilation=dilations[2])
        self.conv_block_4 = ConvBnRelu(in_ch, branch_ch, kernels[3], dilation=dilations[3])
        self.out_channels = 4 * branch_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.conv_block_1, self.conv_block_2, self.conv_block_3, self.conv_block_4)
        return torch.cat([b(x) for b in branches], dim=1)


def _residual_stack(channels: list[int]) -> nn.Module:
    """Residual blocks in sequence; a single block is kept bare (as in the public layout)."""
    blocks = [ResidualBlock(a, b) for a, b in pairwise(channels)]
    return blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)


class NuClick(nn.Module):
    """The published NuClick U-Net. ``width`` multiplies every hidden channel count."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = float(width)

        def c(n: int) -> int:
            return max(1, round(n * width))

        # Encoder. 128 px (full resolution) ...
        self.conv_block_1 = nn.Sequential(
            ConvBnRelu(IN_CHANNELS, c(64), 7), ConvBnRelu(c(64), c(32), 5), ConvBnRelu(c(32), c(32))
        )
        self.residual_block_1 = _residual_stack([c(32), c(64), c(64)])  # 64 px
        self.residual_block_2 = _residual_stack([c(64), c(128)])  # 32 px
        self.multiscale_block_1 = MultiScaleBlock(c(128), c(32), (3, 3, 5, 5), (1, 3, 3, 6))
        ms1 = self.multiscale_block_1.out_channels
        self.residual_block_3 = _residual_stack([ms1, c(128)])
        self.residual_block_4 = _residual_stack([c(128), c(256), c(256), c(256)])  # 16 px
        self.residual_block_5 = _residual_stack([c(256), c(512), c(512), c(512)])  # 8 px
        self.residual_block_6 = _residual_stack([c(512), c(1024), c(1024)])  # 4 px
        # Decoder: up, concatenate the encoder skip, refine.
        self.conv_transpose_1 = nn.ConvTranspose2d(c(1024), c(512), 2, stride=2)  # -> 8 px
        self.residual_block_7 = _residual_stack([2 * c(512), c(512), c(256)])
        self.conv_transpose_2 = nn.ConvTranspose2d(c(256), c(256), 2, stride=2)  # -> 16 px
        self.residual_block_8 = _residual_stack([2 * c(256), c(256)])
        self.multiscale_block_2 = MultiScaleBlock(c(256), c(64), (3, 3, 5, 5), (1, 3, 2, 3))
        self.residual_block_9 = _residual_stack([self.multiscale_block_2.out_channels, c(256)])
        self.conv_transpose_3 = nn.ConvTranspose2d(c(256), c(128), 2, stride=2)  # -> 32 px
        self.residual_block_10 = _residual_stack([2 * c(128), c(128), c(128)])
        self.conv_transpose_4 = nn.ConvTranspose2d(c(128), c(64), 2, stride=2)  # -> 64 px
        self.residual_block_11 = _residual_stack([2 * c(64), c(64)])
        self.multiscale_block_3 = MultiScaleBlock(c(64), c(16), (3, 3, 5, 7), (1, 3, 2, 6))
        self.residual_block_12 = _residual_stack([self.multiscale_block_3.out_channels, c(64)])
        self.conv_transpose_5 = nn.ConvTranspose2d(c(64), c(32), 2, stride=2)  # -> 128 px
        self.conv_block_2 = nn.Sequential(
            ConvBnRelu(2 * c(32), c(64)), ConvBnRelu(c(64), c(32)), ConvBnRelu(c(32), c(32))
        )
        self.conv_block_3 = ConvBnRelu(c(32), 1, 1, batchnorm=False, relu=False, bias=True)
        self.pool = nn.MaxPool2d(2)
        head = self.conv_block_3.conv_bn_relu[0]
        assert isinstance(head, nn.Conv2d) and head.bias is not None
        nn.init.normal_(head.weight, std=0.1)  # start near p = 0.5 everywhere, not saturated
        nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != IN_CHANNELS or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(
                f"NuClick expects (N, 5, H, W) with H, W multiples of 32, got {tuple(x.shape)}"
            )
        e1 = self.conv_block_1(x)
        e2 = self.residual_block_1(self.pool(e1))
        e3 = self.residual_block_3(self.multiscale_block_1(self.residual_block_2(self.pool(e2))))
        e4 = self.residual_block_4(self.pool(e3))
        e5 = self.residual_block_5(self.pool(e4))
        bottom = self.residual_block_6(self.pool(e5))
        d5 = self.residual_block_7(torch.cat([self.conv_transpose_1(bottom), e5], 1))
        d4 = self.residual_block_8(torch.cat([self.conv_transpose_2(d5), e4], 1))
        d4 = self.residual_block_9(self.multiscale_block_2(d4))
        d3 = self.residual_block_10(torch.cat([self.conv_transpose_3(d4), e3], 1))
        d2 = self.residual_block_11(torch.cat([self.conv_transpose_4(d3), e2], 1))
        d2 = self.residual_block_12(self.multiscale_block_3(d2))
        d1 = self.conv_block_2(torch.cat([self.conv_transpose_5(d2), e1], 1))
        out: torch.Tensor = self.conv_block_3(d1)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Checkpoint:
    """What a NuClick checkpoint file holds besides the weights (ours; public files lack it)."""

    width: float = 1.0
    mpp: float = DEFAULT_MPP
    patch_size: int = 128
    extra: dict[str, Any] = field(default_factory=dict)


def _state_dict_of(obj: Any, origin: str) -> dict[str, torch.Tensor]:
    """Weights from a bare state_dict or a training checkpoint ({'state_dict'|'model': ...})."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{origin}: not a NuClick state_dict or checkpoint")
    # Weights saved from DataParallel / DDP / torch.compile carry a prefix: drop it.
    cleaned = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned


def _infer_width(state: Mapping[str, torch.Tensor]) -> float:
    weight = state.get("conv_block_1.0.conv_bn_relu.0.weight")
    return 1.0 if weight is None else weight.shape[0] / 64


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], *, origin: str) -> None:
    """Load weights strictly; the error lists missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for what, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshapen),
    ):
        if keys:
            shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
            problems.append(f"{len(keys)} {what} key(s): {shown}")
    if problems:
        raise CheckpointError(f"{origin}: does not fit the NuClick network: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_model(
    source: str | Path | Mapping[str, Any], *, device: str | torch.device = "cpu"
) -> tuple[NuClick, Checkpoint]:
    """Build the network a checkpoint describes and load its weights (eval mode).

    ``source`` is a file (our checkpoint, or public weights saved as a state_dict) or an
    already loaded mapping. The width is read from the weights' shapes.
    """
    origin = str(source) if isinstance(source, str | Path) else "state_dict"
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: say which
            raise CheckpointError(
                f"{path}: cannot be read as a PyTorch checkpoint ({exc})"
            ) from None
    else:
        obj = source
    state = _state_dict_of(obj, origin)
    meta = obj.get("nuclick", {}) if isinstance(obj, Mapping) else {}
    info = Checkpoint(
        width=float(meta.get("width", _infer_width(state))),
        mpp=float(meta.get("mpp", DEFAULT_MPP)),
        patch_size=int(meta.get("patch_size", 128)),
        extra={k: v for k, v in meta.items() if k not in {"width", "mpp", "patch_size"}},
    )
    model = NuClick(width=info.width)
    load_state(model, {k: v.float() for k, v in state.items()}, origin=origin)
    model.to(device).eval()
    return model, info


def save_model(path: str | Path, model: NuClick, info: Checkpoint, **extra: Any) -> None:
    """Save weights plus our metadata (``nuclick`` key); extra items (optimizer, ...) beside."""
    meta = {"width": model.width, "mpp": info.mpp, "patch_size": info.patch_size, **info.extra}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "nuclick": meta, **extra}
    atomic_save(payload, path)  # makes the folder; a reader never sees half a file
