"""Pretrained encoder weights, found and checked by the features stage's loaders, then
converted to the CellViT encoder (`ViTEncoder`).

- ``h0-mini``: `histocurate.features.h0mini.build_h0mini` loads the timm weights (a file, a
  model folder or the Hugging Face cache); its SwiGLU ``mlp.fc1`` / ``mlp.fc2`` become
  ``mlp.w12`` / ``mlp.w3`` unchanged (both put the gate half first).
- ``phikon``: `histocurate.features.phikon.build_phikon` loads the transformers `ViTModel`;
  its keys are mapped to timm's (q, k, v stacked into ``qkv``).
- ``timm:<name>``: `histocurate.features.timm_encoder.build_timm`.

The positional embedding is resampled to the tile's grid as HistoPLUS does
(`resample_grid`); the final norm is dropped (the skips are taken before it). Nothing is
ever downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from histocurate.cellvit.encoder import EncoderSpec, ViTEncoder, build_encoder, resample_grid
from histocurate.features.weights import load_checked

_DROPPED = ("norm.", "fc_norm.", "head.", "head_drop.")


def h0mini_arch_of(vit: Any) -> dict[str, Any]:
    """Architecture overrides of a loaded timm H0-mini (width, depth, heads, registers,
    SwiGLU width), so that `build_encoder` makes the same network."""
    fc1 = vit.blocks[0].mlp.fc1
    return {
        "embed_dim": int(vit.embed_dim),
        "depth": len(vit.blocks),
        "num_heads": int(vit.blocks[0].attn.num_heads),
        "patch_size": int(vit.patch_embed.patch_size[0]),
        "reg_tokens": int(vit.num_reg_tokens),
        "swiglu_hidden": int(fc1.out_features) // 2,
    }


def phikon_state_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``ViTModel`` state dict (the v4 layout ``encoder.layer.i.attention...``
    or the v5 one ``layers.i.attention.q_proj...``) in timm's ViT key layout.

    >>> s = {"embeddings.cls_token": torch.zeros(1, 1, 4),
    ...      "layers.0.attention.q_proj.weight": torch.zeros(4, 4),
    ...      "layers.0.attention.k_proj.weight": torch.ones(4, 4),
    ...      "layers.0.attention.v_proj.weight": torch.zeros(4, 4)}
    >>> out = phikon_state_to_timm(s)
    >>> sorted(out), tuple(out["blocks.0.attn.qkv.weight"].shape)
    (['blocks.0.attn.qkv.weight', 'cls_token'], (12, 4))
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _PHIKON_SIMPLE:
            out[_PHIKON_SIMPLE[key]] = value
            continue
        match = re.fullmatch(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)", key)
        if match is None:
            out[key] = value  # left for the strict check to name
            continue
        block, name, kind = int(match[1]), match[2], match[3]
        if name in _PHIKON_QKV:
            qkv.setdefault((block, kind), {})[_PHIKON_QKV[name]] = value
        elif name in _PHIKON_INNER:
            out[f"blocks.{block}.{_PHIKON_INNER[name]}.{kind}"] = value
        else:
            out[key] = value
    for (block, kind), parts in qkv.items():
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(
            [parts[p] for p in ("q", "k", "v") if p in parts]
        )
    return out


_PHIKON_SIMPLE = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_PHIKON_QKV = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_PHIKON_INNER = {
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
}


def _prefix_slots(vit: Any) -> int:
    return 0 if getattr(vit, "no_embed_class", False) else int(vit.num_prefix_tokens)


def copy_into(encoder: ViTEncoder, state: dict[str, torch.Tensor], *, source: Path) -> None:
    """Load a timm-layout ViT state dict into ``encoder`` strictly (final norm and head
    dropped, positional embedding resampled to the encoder's grid)."""
    vit = encoder.vit
    state = {k: v for k, v in state.items() if not k.startswith(_DROPPED)}
    if "pos_embed" in state:
        side = int(vit.patch_embed.grid_size[0])
        state["pos_embed"] = resample_grid(state["pos_embed"], side, prefix=_prefix_slots(vit))
    load_checked(vit, state, source=source, architecture=f"CellViT encoder {encoder.name}")


def build_pretrained_encoder(
    spec: EncoderSpec,
    *,
    tile_size: int,
    weights: Path | None = None,
    hf_cache: Path | None = None,
) -> tuple[ViTEncoder, dict[str, Any]]:
    """The encoder of ``spec`` and its full architecture overrides (to record in the
    model's config), with weights from ``weights`` (file or folder) or the Hugging
    Face cache, read by the features stage's loaders (a missing or wrong file raises
    `histocurate.features.weights.WeightsError`, a `UserInputError`)."""
    common: dict[str, Any] = {
        "weights": weights,
        "hf_cache": hf_cache,
        "device": "cpu",
        "precision": "fp32",
    }
    source = weights or Path(f"<Hugging Face cache: {spec.name}>")
    if spec.name == "h0-mini":
        from histocurate.features.h0mini import build_h0mini

        loaded: Any = build_h0mini(**common).model
        arch = {**h0mini_arch_of(loaded), **spec.arch}
        encoder = build_encoder(EncoderSpec(**{**vars(spec), "arch": arch}), tile_size=tile_size)
        state = {
            k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v
            for k, v in loaded.state_dict().items()
        }
    elif spec.name == "phikon":
        from histocurate.features.phikon import build_phikon

        hf = build_phikon(**common).model
        conf = hf.config
        arch = {
            "embed_dim": int(conf.hidden_size),
            "depth": int(conf.num_hidden_layers),
            "num_heads": int(conf.num_attention_heads),
            "patch_size": int(conf.patch_size),
            "mlp_ratio": conf.intermediate_size / conf.hidden_size,
            "ln_eps": float(conf.layer_norm_eps),
            **spec.arch,
        }
        encoder = build_encoder(EncoderSpec(**{**vars(spec), "arch": arch}), tile_size=tile_size)
        state = phikon_state_to_timm(hf.state_dict())
    else:
        from histocurate.features.timm_encoder import build_timm

        name = spec.name.removeprefix("timm:")
        loaded = build_timm(name, model_kwargs=dict(spec.arch) or None, **common).model
        arch = dict(spec.arch)
        encoder = build_encoder(spec, tile_size=tile_size)
        state = loaded.state_dict()
    copy_into(encoder, state, source=source)
    return encoder, arch
