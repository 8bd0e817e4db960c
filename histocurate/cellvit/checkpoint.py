"""CellViT checkpoints: ours, and the released HistoPLUS state dicts.

Our file is a dict: ``state_dict`` (in the HistoPLUS on-disk key layout, encoder keys
``backbone.feature_extractor.<timm name>``), ``config`` (`CellViTConfig`), ``classes`` and
``colours`` (the types, background excluded), ``mpp``, ``tile_size``, ``mean`` / ``std``,
``encoder`` and ``train_config``. A bare HistoPLUS state dict loads too: its architecture
is read from the tensors (tile size from ``pos_embed``), and `export_histoplus` writes our
weights as such a bare file, which histoplus's loader reads (it inserts ``model.`` into the
encoder keys and drops the final norm, as `to_memory_keys` does here).

Loading is strict on keys and shapes; a mismatch is a `CheckpointError` (a
`UserInputError`: the CLI exits 2) naming the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from histocurate.cellvit.decoder import DecoderWidths
from histocurate.cellvit.model import CellViT, CellViTConfig, build_model
from histocurate.features.weights import WeightsError
from histocurate.torchutil import atomic_save, load_torch_file, resolve_device

FORMAT = "histocurate.cellvit"
FORMAT_VERSION = 1
_MEM = "backbone.feature_extractor.model."
_DISK = "backbone.feature_extractor."
# HistoPLUS' 15 outputs (index 0 background), from its hub definitions.
HISTOPLUS_CLASSES = (
    "Cancer cell", "Lymphocytes", "Fibroblasts", "Plasmocytes", "Eosinophils", "Neutrophils",
    "Macrophages", "Muscle Cell", "Endothelial Cell", "Red blood cell", "Epithelial",
    "Apoptotic Body", "Mitotic Figures", "Minor Stromal Cell",
)  # fmt: skip
HISTOPLUS_MPP = {448: 0.25, 224: 0.5}
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000",
)  # fmt: skip


class CheckpointError(WeightsError):
    """A file that is not a usable CellViT checkpoint (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """What a checkpoint says besides its weights."""

    classes: tuple[str, ...]
    colours: tuple[str, ...]
    mpp: float | None
    tile_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    encoder: str
    config: CellViTConfig
    train_config: dict[str, Any] = field(default_factory=dict)
    source: str = FORMAT  # or "histoplus" for a bare state dict


def to_disk_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In-memory keys -> the released layout (``...feature_extractor.model.`` ->
    ``...feature_extractor.``)."""
    return {(_DISK + k[len(_MEM) :] if k.startswith(_MEM) else k): v for k, v in state.items()}


def to_memory_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Either layout -> in-memory keys; ``module.`` / ``_orig_mod.`` prefixes removed and the
    encoder's final norm (unused: the skips are taken before it) dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        if key.startswith(_DISK) and not key.startswith(_MEM):
            key = _MEM + key[len(_DISK) :]
        if key.startswith(_MEM + "norm."):
            continue
        out[key] = value
    return out


def _listing(keys: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: Path) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is a
    `CheckpointError` naming them."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or shapes:
        parts = [
            f"{what}: {_listing(keys)}"
            for what, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("mis-shaped keys", shapes),
            )
            if keys
        ]
        raise CheckpointError(
            f"{source}: weights do not fit the CellViT model ({'; '.join(parts)})"
        )
    model.load_state_dict(dict(state), strict=True)


def _shape(state: Mapping[str, torch.Tensor], key: str, source: Path) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: not a HistoPLUS / CellViT state dict (no {key})")
    return tuple(state[key].shape)


def config_from_state(state: Mapping[str, torch.Tensor], *, source: Path) -> CellViTConfig:
    """The architecture of a bare HistoPLUS state dict (in-memory keys), read from shapes."""
    dim = _shape(state, _MEM + "cls_token", source)[-1]
    patch = _shape(state, _MEM + "patch_embed.proj.weight", source)[-1]
    grid = _shape(state, _MEM + "pos_embed", source)[1]
    if _MEM + "blocks.0.mlp.w12.weight" not in state:
        raise CheckpointError(
            f"{source}: a bare state dict must be HistoPLUS' (H0-mini, SwiGLU w12/w3); "
            "other encoders load from our checkpoints only"
        )
    side = math.isqrt(grid)
    if side * side != grid:
        raise CheckpointError(f"{source}: pos_embed of {grid} patches is not a square grid")
    depth = 1 + max(
        int(k[len(_MEM) :].split(".")[1]) for k in state if k.startswith(_MEM + "blocks.")
    )
    reg = _shape(state, _MEM + "reg_token", source)[1] if _MEM + "reg_token" in state else 0
    hidden = _shape(state, _MEM + "blocks.0.mlp.w3.weight", source)[1]
    n_out = _shape(state, "tp_branch.decoder0_header.2.weight", source)[0]
    bottleneck = _shape(state, "np_branch.bottleneck_upsampler.weight", source)[1]
    base = DecoderWidths.for_embed_dim(dim)
    divisor = 1
    if bottleneck != base.bottleneck:
        divisor = next((d for d in range(2, 257) if base.scaled(d).bottleneck == bottleneck), 1)
    arch = {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": max(1, dim // 64),
        "patch_size": patch,
        "reg_tokens": reg,
        "swiglu_hidden": hidden,
    }
    return CellViTConfig(
        encoder="h0-mini",
        n_types=n_out - 1,
        tile_size=side * patch,
        arch=arch,
        decoder_divisor=divisor,
    )


_GIVE_INSTEAD = (
    "give the .pt file `histocurate train` writes (runs/<name>/best.pt), a run name in runs/, "
    "or a HistoPLUS state dict saved with torch.save"
)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return load_torch_file(path, give_instead=_GIVE_INSTEAD, error=CheckpointError)


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[CellViT, CheckpointInfo]:
    """Our checkpoint or a bare HistoPLUS state dict -> (model in eval mode, info)."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a checkpoint dict or a state dict")
    if raw.get("format") == FORMAT:
        missing = [k for k in ("state_dict", "config", "classes", "tile_size") if k not in raw]
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
        if int(raw.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format {raw['format_version']} is newer")
        state = to_memory_keys(raw["state_dict"])
        config = CellViTConfig.from_dict(dict(raw["config"]))
        model = build_model(config)
        info = CheckpointInfo(
            classes=tuple(raw["classes"]),
            colours=tuple(raw.get("colours") or default_colours(len(raw["classes"]))),
            mpp=None if raw.get("mpp") is None else float(raw["mpp"]),
            tile_size=int(raw["tile_size"]),
            mean=tuple(raw.get("mean", model.mean)),
            std=tuple(raw.get("std", model.std)),
            encoder=config.encoder,
            config=config,
            train_config=dict(raw.get("train_config") or {}),
        )
    else:
        if not all(isinstance(v, torch.Tensor) for v in raw.values()):
            raise CheckpointError(f"{path}: neither our checkpoint nor a bare state dict")
        state = to_memory_keys(raw)
        config = config_from_state(state, source=path)
        model = build_model(config)
        n = config.n_types
        generic = tuple(f"type_{i}" for i in range(1, n + 1))
        info = CheckpointInfo(
            classes=HISTOPLUS_CLASSES if n == len(HISTOPLUS_CLASSES) else generic,
            colours=default_colours(n),
            mpp=HISTOPLUS_MPP.get(config.tile_size),
            tile_size=config.tile_size,
            mean=model.mean,
            std=model.std,
            encoder=config.encoder,
            config=config,
            source="histoplus",
        )
    load_strict(model, state, source=path)
    return model.to(resolve_device(device)).eval(), info


def default_colours(n: int) -> tuple[str, ...]:
    return tuple(PALETTE[i % len(PALETTE)] for i in range(n))


def unwrap(model: torch.nn.Module) -> CellViT:
    """The CellViT inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while not isinstance(model, CellViT):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a CellViT model: {type(model).__name__}")
        model = inner
    return model


def checkpoint_payload(
    model: torch.nn.Module,
    *,
    classes: Sequence[str],
    mpp: float | None,
    colours: Sequence[str] | None = None,
    train_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Our checkpoint as a dict (weights copied to the CPU, in the released key layout):
    what `save_checkpoint` writes, and what a training loop adds its state to."""
    net = unwrap(model)
    if net.config is None:
        raise ValueError("the model has no config: build it with build_model")
    if len(classes) != net.n_types:
        raise ValueError(f"{len(classes)} class names for a model of {net.n_types} types")
    colours = tuple(colours) if colours is not None else default_colours(len(classes))
    state = {k: v.detach().to("cpu", copy=True) for k, v in to_disk_keys(net.state_dict()).items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": state,
        "config": net.config.to_dict(),
        "classes": list(classes),
        "colours": list(colours),
        "mpp": mpp,
        "tile_size": net.config.tile_size,
        "mean": list(net.mean),
        "std": list(net.std),
        "encoder": net.config.encoder,
        "train_config": dict(train_config or {}),
    }


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    classes: Sequence[str],
    mpp: float | None,
    colours: Sequence[str] | None = None,
    train_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write our checkpoint atomically (`histocurate.torchutil.atomic_save`)."""
    payload = checkpoint_payload(model, classes=classes, mpp=mpp, colours=colours,
                                 train_config=train_config)  # fmt: skip
    return atomic_save(payload, path)


def export_histoplus(model: torch.nn.Module, path: str | Path) -> Path:
    """The bare state dict histoplus's loader reads (released key layout)."""
    state = {k: v.detach().cpu() for k, v in to_disk_keys(unwrap(model).state_dict()).items()}
    return atomic_save(state, path)
