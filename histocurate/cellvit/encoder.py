"""ViT encoders for CellViT: the raw outputs of four chosen blocks, as NCHW maps.

The network is a timm `VisionTransformer` built for the tile size (``dynamic_img_size`` so
that other multiples of the patch size run too) and held as ``feature_extractor.model``,
which gives the HistoPLUS key layout (``backbone.feature_extractor.model.blocks.0...``).
The final norm, ``fc_norm`` and head are `Identity`: the skips are block outputs before any
norm, with the prefix tokens (CLS, registers) removed, as in HistoPLUS.

Encoders by name:

- ``h0-mini``: ViT-B/14, 4 registers, LayerScale 1e-5, SwiGLU MLP whose parameters are
  named ``w12`` (gate half first) and ``w3`` as in the HistoPLUS checkpoints; H-Optimus
  normalisation.
- ``phikon``: ViT-B/16 (class token only), ImageNet normalisation.
- ``timm:<name>``: any timm ViT, the normalisation of its timm data configuration.

Weights are loaded and converted by `histocurate.cellvit.pretrained` (through the features
stage's loaders); this module only builds architectures.

>>> spec = EncoderSpec(name="h0-mini", arch={"embed_dim": 64, "depth": 4, "num_heads": 2})
>>> enc = build_encoder(spec, tile_size=112)
>>> enc.out_indices, enc.embed_dim, enc.patch_size
((0, 1, 2, 3), 64, 14)
>>> [tuple(f.shape) for f in enc(torch.zeros(1, 3, 112, 112)).skips]
[(1, 64, 8, 8), (1, 64, 8, 8), (1, 64, 8, 8), (1, 64, 8, 8)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from histocurate.errors import UserInputError
from histocurate.features.base import (
    H_OPTIMUS_MEAN,
    H_OPTIMUS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
)

# 0-based blocks used as skips; the last one feeds the bottleneck. ViT-B: the released
# HistoPLUS checkpoints; ViT-L / ViT-H: CellViT's SAM-L / SAM-H choice (evenly spaced).
DEFAULT_OUT_INDICES: dict[int, tuple[int, int, int, int]] = {
    12: (3, 5, 7, 11),
    24: (5, 11, 17, 23),
    32: (7, 15, 23, 31),
}

H0MINI_ARCH: dict[str, Any] = {
    "patch_size": 14,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "reg_tokens": 4,
    "no_embed_class": True,
    "init_values": 1e-5,
    "mlp_ratio": 4.0,
}
PHIKON_ARCH: dict[str, Any] = {
    "patch_size": 16,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "ln_eps": 1e-12,
}


def default_out_indices(depth: int) -> tuple[int, int, int, int]:
    """Skip blocks for a ViT of ``depth`` blocks: the table above, else evenly spaced.

    >>> default_out_indices(12), default_out_indices(8)
    ((3, 5, 7, 11), (1, 3, 5, 7))
    """
    if depth in DEFAULT_OUT_INDICES:
        return DEFAULT_OUT_INDICES[depth]
    if depth < 4:
        raise UserInputError(f"a ViT needs at least 4 blocks for 4 skips, got depth {depth}")
    a, b, c, d = (max(0, round(depth * k / 4) - 1) for k in (1, 2, 3, 4))
    return (a, b, c, d)


def swiglu_hidden(hidden_features: int) -> int:
    """The hidden width of a fused SwiGLU given the plain MLP width (xformers' 2/3 rule,
    rounded up to a multiple of 8).

    >>> swiglu_hidden(3072)
    2048
    """
    return (int(hidden_features * 2 / 3) + 7) // 8 * 8


class SwiGLUFused(nn.Module):
    """SwiGLU MLP with one packed input projection: ``w3(silu(x W1) * (x W2))`` where
    ``w12 = [W1; W2]`` (gate first), the HistoPLUS (xformers) parameter layout."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        *,
        hidden: int | None = None,
        bias: bool = True,
        **_: Any,
    ) -> None:
        super().__init__()
        width = hidden if hidden is not None else swiglu_hidden(hidden_features or in_features)
        self.w12 = nn.Linear(in_features, 2 * width, bias=bias)
        self.w3 = nn.Linear(width, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """Which encoder and its architecture overrides (``arch``: timm arguments such as
    ``embed_dim``, ``depth``, ``num_heads``; ``swiglu_hidden`` for h0-mini)."""

    name: str = "h0-mini"
    arch: dict[str, Any] = field(default_factory=dict)
    out_indices: tuple[int, int, int, int] | None = None
    drop_path_rate: float = 0.0


class EncoderFeatures(NamedTuple):
    """The four skip maps (B, D, S/p, S/p) and the final block's map (the same tensor as
    ``skips[3]`` when the last skip is the last block)."""

    skips: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    final: torch.Tensor


class _Holder(nn.Module):
    """Gives the ViT the HistoPLUS name ``feature_extractor.model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


class ViTEncoder(nn.Module):
    """A timm ViT returning raw block outputs of ``out_indices`` as NCHW maps."""

    def __init__(
        self,
        vit: Any,
        *,
        name: str,
        out_indices: tuple[int, int, int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if len(out_indices) != 4 or not all(0 <= i < depth for i in out_indices):
            raise UserInputError(f"out_indices {out_indices}: need 4 blocks in 0..{depth - 1}")
        if list(out_indices) != sorted(set(out_indices)):
            raise UserInputError(f"out_indices {out_indices}: must be strictly increasing")
        vit.norm, vit.fc_norm, vit.head = nn.Identity(), nn.Identity(), nn.Identity()
        if hasattr(vit, "head_drop"):
            vit.head_drop = nn.Identity()
        self.feature_extractor = _Holder(vit)
        self.name = name
        self.out_indices = tuple(int(i) for i in out_indices)
        self.embed_dim = int(vit.embed_dim)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.depth = depth
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def vit(self) -> Any:
        return self.feature_extractor.model

    def forward(self, x: torch.Tensor) -> EncoderFeatures:
        size = x.shape[-1]
        if x.shape[-2] != size or size % self.patch_size:
            raise ValueError(
                f"input {tuple(x.shape)}: tiles must be square, a multiple of {self.patch_size}"
            )
        wanted = sorted({*self.out_indices, self.depth - 1})
        maps = self.vit.forward_intermediates(
            x, indices=wanted, norm=False, output_fmt="NCHW", intermediates_only=True
        )
        by_index = dict(zip(wanted, maps, strict=True))
        a, b, c, d = (by_index[i] for i in self.out_indices)
        return EncoderFeatures((a, b, c, d), by_index[self.depth - 1])


def _create_vit(model_name: str, tile_size: int, **kwargs: Any) -> Any:
    import timm

    if not timm.is_model(model_name):
        raise UserInputError(f"encoder 'timm:{model_name}': timm has no model {model_name!r}")
    try:
        return timm.create_model(
            model_name,
            pretrained=False,
            num_classes=0,
            img_size=tile_size,
            dynamic_img_size=True,
            **kwargs,
        )
    except TypeError as error:  # a CNN or other family: no img_size / ViT options
        raise UserInputError(
            f"encoder 'timm:{model_name}': not a ViT timm can build at {tile_size} px "
            f"({error}); CellViT needs a ViT (e.g. timm:vit_base_patch16_224)"
        ) from None


def normalisation_of(vit: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of a timm model's data configuration."""
    import timm.data

    data = timm.data.resolve_data_config({}, model=vit)
    return tuple(data["mean"]), tuple(data["std"])


def build_encoder(spec: EncoderSpec, *, tile_size: int) -> ViTEncoder:
    """The encoder architecture of ``spec`` for square tiles of ``tile_size`` px (random
    weights; `histocurate.cellvit.pretrained.load_encoder_weights` fills them)."""
    arch = dict(spec.arch)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    common: dict[str, Any] = {"drop_path_rate": spec.drop_path_rate}
    if spec.name == "h0-mini":
        arch = {**H0MINI_ARCH, **arch}
        hidden = arch.pop("swiglu_hidden", None)
        mlp = partial(SwiGLUFused, hidden=hidden)
        vit = _create_vit(
            "vit_base_patch14_reg4_dinov2",
            tile_size,
            mlp_layer=mlp,
            act_layer=nn.SiLU,
            **arch,
            **common,
        )
        mean, std = H_OPTIMUS_MEAN, H_OPTIMUS_STD
    elif spec.name == "phikon":
        arch = {**PHIKON_ARCH, **arch}
        eps = float(arch.pop("ln_eps"))
        norm = partial(nn.LayerNorm, eps=eps)
        vit = _create_vit("vit_base_patch16_224", tile_size, norm_layer=norm, **arch, **common)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif spec.name.startswith("timm:") and len(spec.name) > 5:
        vit = _create_vit(spec.name.removeprefix("timm:"), tile_size, **arch, **common)
        if not hasattr(vit, "forward_intermediates") or not hasattr(vit, "blocks"):
            raise UserInputError(f"encoder {spec.name!r}: not a ViT (CellViT needs ViT blocks)")
        mean, std = normalisation_of(vit)
    else:
        raise UserInputError(
            f"unknown CellViT encoder {spec.name!r}; choose h0-mini, phikon or timm:<name>"
        )
    patch = int(vit.patch_embed.patch_size[0])
    if tile_size % patch:
        raise UserInputError(f"tile size {tile_size} is not a multiple of the patch {patch}")
    indices = spec.out_indices or default_out_indices(len(vit.blocks))
    return ViTEncoder(vit, name=spec.name, out_indices=indices, mean=mean, std=std)


def resample_grid(pos: torch.Tensor, new_side: int, *, prefix: int = 0) -> torch.Tensor:
    """Resample a ``(1, prefix + side**2, D)`` positional embedding to ``new_side**2``
    patches as HistoPLUS does at build time (bicubic, no antialias, DINO's +0.1 scale).

    >>> resample_grid(torch.zeros(1, 1 + 16, 8), 4, prefix=1).shape
    torch.Size([1, 17, 8])
    >>> tuple(resample_grid(torch.zeros(1, 256, 8), 32).shape)
    (1, 1024, 8)
    """
    head, grid = pos[:, :prefix], pos[:, prefix:]
    side = math.isqrt(grid.shape[1])
    if side * side != grid.shape[1]:
        raise ValueError(f"positional embedding of {grid.shape[1]} patches is not a square grid")
    if side == new_side:
        return pos
    dim = grid.shape[-1]
    image = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    scale = (new_side + 0.1) / side
    out = F.interpolate(image, scale_factor=(scale, scale), mode="bicubic", align_corners=False)
    if out.shape[-1] != new_side:  # float rounding of the scale: fall back to the size
        out = F.interpolate(image, size=(new_side, new_side), mode="bicubic", align_corners=False)
    out = out.permute(0, 2, 3, 1).reshape(1, new_side * new_side, dim).to(pos.dtype)
    return torch.cat([head, out], dim=1)
