"""H0-mini (Bioptimus): ViT-B/14 with 4 register tokens, distilled from H-Optimus-0.

The architecture is timm's ``vit_base_patch14_reg4_dinov2`` family at 224 px with a SwiGLU
MLP (``SwiGLUPacked`` + SiLU) and LayerScale (``init_values=1e-5``); inputs are normalised
with H-Optimus statistics. The output is the CLS token (768) or, with
``pooling="cls+mean"``, the CLS token followed by the mean patch token (1536), as in the
model card.

Weights: the Hugging Face cache (``models--bioptimus--H0-mini``, timm's hub layout with a
``config.json`` whose ``model_args`` give the architecture) or a plain state_dict file
(``.safetensors`` / ``.pth``). For a plain file the shape of the network (width, depth,
patch, registers, MLP width) is read from the tensors themselves, with 64-wide attention
heads as in every ViT-B.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from histocurate.features.base import H_OPTIMUS_MEAN, H_OPTIMUS_STD, TorchEncoder
from histocurate.features.weights import (
    WeightsError,
    fingerprint,
    load_checked,
    load_state_dict,
    resolve_model_dir,
    weight_file_in,
)

REPO_ID = "bioptimus/H0-mini"
ARCHITECTURE = "vit_base_patch14_reg4_dinov2"
# ViT-B/14, 4 registers, LayerScale; SwiGLU hidden width 2048 (DINOv2 recipe: 2/3 * 4 * 768),
# i.e. a packed fc1 of 4096 = 768 * 5.33334. Read from the weights whenever they are given.
DEFAULT_ARGS: dict[str, Any] = {
    "img_size": 224,
    "patch_size": 14,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "mlp_ratio": 5.33334,
    "init_values": 1e-5,
    "reg_tokens": 4,
    "no_embed_class": True,
}
_ARG_KEYS = (*DEFAULT_ARGS, "qkv_bias", "class_token", "dynamic_img_size")


class H0MiniEncoder(TorchEncoder):
    """CLS token (optionally with the mean patch token) after the final norm."""

    def __init__(self, *, pooling: str = "cls", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pooling = pooling

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(pixels)
        cls = tokens[:, 0]
        if self.pooling == "cls":
            return cls
        patches = tokens[:, self.model.num_prefix_tokens :]
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)


def create_h0mini_model(**overrides: Any) -> Any:
    """The timm network (random weights) with ``DEFAULT_ARGS`` updated by ``overrides``."""
    import timm
    from timm.layers import SwiGLUPacked

    args = {**DEFAULT_ARGS, **overrides}
    return timm.create_model(
        ARCHITECTURE,
        pretrained=False,
        num_classes=0,
        mlp_layer=SwiGLUPacked,
        act_layer=torch.nn.SiLU,
        **args,
    )


def args_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture arguments read from the tensors of a plain state_dict (best effort)."""
    args: dict[str, Any] = {}
    if "cls_token" in state:
        dim = int(state["cls_token"].shape[-1])
        args["embed_dim"] = dim
        args["num_heads"] = max(1, dim // 64)
    if "patch_embed.proj.weight" in state:
        args["patch_size"] = int(state["patch_embed.proj.weight"].shape[-1])
    if "reg_token" in state:
        args["reg_tokens"] = int(state["reg_token"].shape[1])
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    if blocks:
        args["depth"] = max(blocks) + 1
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and "embed_dim" in args:
        # timm takes int(embed_dim * mlp_ratio): +0.5 keeps float rounding from losing one.
        args["mlp_ratio"] = (int(fc1.shape[0]) + 0.5) / args["embed_dim"]
    pos = state.get("pos_embed")
    if pos is not None and "patch_size" in args:
        side = math.isqrt(int(pos.shape[1]))
        if side * side == int(pos.shape[1]):
            args["img_size"] = side * args["patch_size"]
    return args


def _hub_config(folder: Path) -> tuple[dict[str, Any], Any]:
    """``model_args`` and (mean, std) of a timm hub ``config.json`` (empty when absent)."""
    path = folder / "config.json"
    if not path.is_file():
        return {}, None
    conf = json.loads(path.read_text())
    model_args = {k: v for k, v in conf.get("model_args", {}).items() if k in _ARG_KEYS}
    pre = conf.get("pretrained_cfg", {})
    if "input_size" in pre and "img_size" not in model_args:
        model_args["img_size"] = int(pre["input_size"][-1])
    norm = (tuple(pre["mean"]), tuple(pre["std"])) if "mean" in pre and "std" in pre else None
    return model_args, norm


def build_h0mini(
    *,
    weights: Path | None,
    hf_cache: Path | None,
    device: str,
    precision: str,
    pooling: str = "cls",
    random_weights: bool = False,
    arch_overrides: dict[str, Any] | None = None,
) -> H0MiniEncoder:
    """H0-mini from a weight file, a model folder or the HF cache (or random, on request)."""
    mean, std = H_OPTIMUS_MEAN, H_OPTIMUS_STD
    if random_weights:
        model = create_h0mini_model(**(arch_overrides or {}))
        identity: dict[str, Any] = {"weights": "random"}
    else:
        found = resolve_model_dir(
            encoder="h0-mini",
            repo_id=REPO_ID,
            given=weights,
            hf_cache=hf_cache,
            setting="h0_mini_weights",
        )
        file = found if found.is_file() else weight_file_in(found)
        assert file is not None  # resolve_model_dir only returns folders holding weights
        state = load_state_dict(file)
        hub_args, norm = _hub_config(file.parent)
        if norm is not None:
            mean, std = norm
        args = {**args_from_state(state), **hub_args, **(arch_overrides or {})}
        try:
            model = create_h0mini_model(**args)
        except (AssertionError, ValueError, RuntimeError) as exc:  # timm checks its shapes
            raise WeightsError(
                f"{file}: the tensors do not describe an H0-mini network (architecture read "
                f"from them: {args}; timm refused it: {exc or type(exc).__name__}); the file "
                "is truncated or of another model"
            ) from None
        load_checked(model, state, source=file, architecture=f"H0-mini ({ARCHITECTURE})")
        identity = {"weights_path": str(file), "sha256": fingerprint(file)}
    width = int(model.num_features)
    return H0MiniEncoder(
        name="h0-mini",
        model=model,
        dim=width * (2 if pooling == "cls+mean" else 1),
        input_px=int(model.patch_embed.img_size[0]),
        mean=mean,
        std=std,
        device=device,
        precision=precision,
        pooling=pooling,
        identity={**identity, "pooling": pooling},
    )
