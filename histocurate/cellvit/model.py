"""CellViT: a ViT encoder, the shared neck and three branches (NP, HV, NT).

``model(x)`` takes float (B, 3, S, S), normalised as ``model.mean`` / ``model.std`` say,
and returns ``{"np": (B, 2, S, S) logits, "hv": (B, 2, S, S) maps (channel 0 horizontal),
"tp": (B, n_types + 1, S, S) logits}``, class 0 being background. Any S that is a multiple
of the patch size runs (the positional embedding is resampled by timm at run time).

A training loop builds it from a `CellViTConfig` with `build_model`, and uses
`freeze_encoder` / `unfreeze_encoder` and `parameter_groups`. It is channels-last
friendly: ``model.to(memory_format=torch.channels_last)`` and channels-last inputs.

>>> cfg = CellViTConfig(n_types=3, tile_size=112, arch=TINY_ARCH, decoder_divisor=16)
>>> out = build_model(cfg)(torch.zeros(1, 3, 112, 112))
>>> {k: tuple(v.shape) for k, v in out.items()}
{'np': (1, 2, 112, 112), 'hv': (1, 2, 112, 112), 'tp': (1, 4, 112, 112)}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histocurate.cellvit.decoder import DecoderBranch, DecoderWidths, Neck
from histocurate.cellvit.encoder import EncoderSpec, ViTEncoder, build_encoder
from histocurate.errors import UserInputError

# A small random ViT (h0-mini layout) for CPU tests, doctests and the ``tiny`` preset.
TINY_ARCH: dict[str, Any] = {"embed_dim": 64, "depth": 4, "num_heads": 2}


@dataclass(frozen=True, kw_only=True)
class CellViTConfig:
    """Everything that fixes the architecture (and so the state dict's keys and shapes).

    ``arch`` overrides the encoder's timm arguments (width, depth, heads, ...);
    ``decoder_divisor`` divides every decoder width (1: CellViT's widths).
    """

    encoder: str = "h0-mini"
    n_types: int = 13
    tile_size: int = 448
    arch: dict[str, Any] = field(default_factory=dict)
    out_indices: tuple[int, int, int, int] | None = None
    decoder_divisor: int = 1
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.n_types < 1:
            raise UserInputError(f"n_types must be at least 1, got {self.n_types}")
        if self.decoder_divisor < 1:
            raise UserInputError(f"decoder_divisor must be >= 1, got {self.decoder_divisor}")
        if self.out_indices is not None:
            object.__setattr__(self, "out_indices", tuple(int(i) for i in self.out_indices))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able) for checkpoints; `from_dict` reverses it."""
        out = asdict(self)
        out["out_indices"] = list(self.out_indices) if self.out_indices else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellViTConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(f"CellViT config: unknown fields {', '.join(unknown)}")
        return cls(**data)

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            name=self.encoder,
            arch=dict(self.arch),
            out_indices=self.out_indices,
            drop_path_rate=self.drop_path_rate,
        )


class CellViT(nn.Module):
    """Encoder ``backbone``, ``neck`` and ``np_branch`` / ``hv_branch`` / ``tp_branch``."""

    def __init__(
        self, encoder: ViTEncoder, *, n_types: int, widths: DecoderWidths, dropout: float = 0.0
    ) -> None:
        super().__init__()
        dim = encoder.embed_dim
        self.backbone = encoder
        self.neck = Neck(dim, widths, dropout)
        self.np_branch = DecoderBranch(dim, 2, widths, dropout)
        self.hv_branch = DecoderBranch(dim, 2, widths, dropout)
        self.tp_branch = DecoderBranch(dim, n_types + 1, widths, dropout)
        self.n_types = n_types
        self.config: CellViTConfig | None = None  # set by build_model
        self.mean = encoder.mean
        self.std = encoder.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        necks = self.neck(x, feats.skips)
        bottleneck = feats.skips[3]
        return {
            "np": self.np_branch(bottleneck, necks),
            "hv": self.hv_branch(bottleneck, necks),
            "tp": self.tp_branch(bottleneck, necks),
        }

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` (B, 3, S, S) RGB -> the float input this model wants (same device)."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def decoder_modules(self) -> list[nn.Module]:
        return [self.neck, self.np_branch, self.hv_branch, self.tp_branch]


def build_model(
    config: CellViTConfig,
    *,
    pretrained: bool = False,
    weights: Path | None = None,
    hf_cache: Path | None = None,
) -> CellViT:
    """The model of ``config``; with ``pretrained`` the encoder's weights come from
    ``weights`` or the Hugging Face cache (never the network), else all weights are random."""
    spec = config.encoder_spec()
    if pretrained:
        from histocurate.cellvit.pretrained import build_pretrained_encoder

        encoder, arch = build_pretrained_encoder(
            spec, tile_size=config.tile_size, weights=weights, hf_cache=hf_cache
        )
        config = replace(config, arch=arch)  # what the weights said, for the checkpoint
    else:
        if weights is not None:
            raise UserInputError("encoder weights given with pretrained=False")
        encoder = build_encoder(spec, tile_size=config.tile_size)
    if config.drop_rate:
        for block in encoder.vit.blocks:  # timm's proj_drop / attn_drop equivalents
            block.attn.proj_drop.p = config.drop_rate
    widths = DecoderWidths.for_embed_dim(encoder.embed_dim)
    if config.decoder_divisor > 1:
        widths = widths.scaled(config.decoder_divisor)
    model = CellViT(encoder, n_types=config.n_types, widths=widths, dropout=config.drop_rate)
    model.config = config
    return model


def set_encoder_trainable(model: CellViT, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze the encoder's parameters; the decoder is untouched."""
    for param in model.backbone.parameters():
        param.requires_grad_(trainable)


def freeze_encoder(model: CellViT) -> None:
    """Stop gradients into the encoder (CellViT's first epochs)."""
    set_encoder_trainable(model, False)


def unfreeze_encoder(model: CellViT) -> None:
    set_encoder_trainable(model, True)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token"))


def parameter_groups(
    model: CellViT,
    *,
    lr: float,
    weight_decay: float,
    encoder_lr: float | None = None,
    decay_norms_and_biases: bool = True,
) -> list[dict[str, Any]]:
    """Optimiser groups ``encoder`` / ``decoder`` (and their ``*_no_decay`` halves when
    ``decay_norms_and_biases`` is False; CellViT and the paper decay everything). All
    parameters are listed, frozen ones too, so that unfreezing needs no new optimiser."""
    rates = {"encoder": lr if encoder_lr is None else encoder_lr, "decoder": lr}
    parts: dict[str, Iterable[tuple[str, nn.Parameter]]] = {
        "encoder": model.backbone.named_parameters(),
        "decoder": ((n, p) for m in model.decoder_modules() for n, p in m.named_parameters()),
    }
    groups: list[dict[str, Any]] = []
    for part, named in parts.items():
        decay: list[nn.Parameter] = []
        plain: list[nn.Parameter] = []
        for name, param in named:
            (plain if not decay_norms_and_biases and _no_decay(name, param) else decay).append(
                param
            )
        groups.append(
            {"name": part, "params": decay, "lr": rates[part], "weight_decay": weight_decay}
        )
        if plain:
            groups.append(
                {
                    "name": f"{part}_no_decay",
                    "params": plain,
                    "lr": rates[part],
                    "weight_decay": 0.0,
                }
            )
    return [g for g in groups if g["params"]]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (BatchNorm buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
