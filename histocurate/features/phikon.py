"""Phikon (Owkin): ViT-B/16 trained with iBOT on TCGA tiles; the 768-d CLS token.

Loaded with `transformers.ViTModel` from a local model folder or the Hugging Face cache
(``models--owkin--phikon/snapshots/<revision>/`` with ``config.json`` and
``model.safetensors``). The architecture comes from the folder's ``config.json``, so any
ViT saved in this layout loads; the normalisation from ``preprocessor_config.json`` when
present (ImageNet statistics otherwise, as Phikon's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from histocurate.features.base import IMAGENET_MEAN, IMAGENET_STD, TorchEncoder
from histocurate.features.weights import (
    WeightsError,
    fingerprint,
    resolve_model_dir,
    weight_file_in,
    wrong_architecture,
)

REPO_ID = "owkin/phikon"


class PhikonEncoder(TorchEncoder):
    """CLS token of the last layer (``last_hidden_state[:, 0]``), as in Phikon's model card."""

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        return out.last_hidden_state[:, 0]


def _normalisation(folder: Path) -> tuple[Any, Any]:
    path = folder / "preprocessor_config.json"
    if path.is_file():
        try:
            conf = json.loads(path.read_text())
            return tuple(conf["image_mean"]), tuple(conf["image_std"])
        except (ValueError, KeyError, TypeError):
            pass
    return IMAGENET_MEAN, IMAGENET_STD


def load_vit_folder(folder: Path, *, architecture: str) -> Any:
    """A `ViTModel` (no pooler) from a local folder; wrong weights -> `WeightsError`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import ViTModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source = weight_file_in(folder) or folder
    try:
        loaded: Any = ViTModel.from_pretrained(
            str(folder), local_files_only=True, add_pooling_layer=False, output_loading_info=True
        )
        model, info = loaded
    except (OSError, ValueError, RuntimeError) as exc:
        text = str(exc)
        if "size mismatch" in text or "mismatch" in text.lower():
            raise wrong_architecture(
                source, architecture, missing=(), unexpected=(), mismatched=[text[:300]]
            ) from None
        raise WeightsError(f"{folder}: cannot load a ViT model from this folder ({exc})") from None
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.startswith("pooler.")]
    missing = list(info.get("missing_keys", ()))
    mismatched = [str(m) for m in info.get("mismatched_keys", ())]
    if missing or unexpected or mismatched:
        raise wrong_architecture(
            source, architecture, missing=missing, unexpected=unexpected, mismatched=mismatched
        )
    return model


def build_phikon(
    *,
    weights: Path | None,
    hf_cache: Path | None,
    device: str,
    precision: str,
    random_weights: bool = False,
) -> PhikonEncoder:
    """Phikon from ``weights`` (folder, cache) or the HF cache; random ViT-B/16 on request."""
    identity: dict[str, Any]
    model: Any
    config: Any
    mean: Any
    std: Any
    if random_weights:
        from transformers import ViTConfig, ViTModel

        config = ViTConfig()  # ViT-B/16 at 224 px: Phikon's architecture
        model = ViTModel(config, add_pooling_layer=False)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        identity = {"weights": "random"}
    else:
        found = resolve_model_dir(
            encoder="phikon",
            repo_id=REPO_ID,
            given=weights,
            hf_cache=hf_cache,
            required=("config.json",),
            setting="phikon_weights",
        )
        folder = found.parent if found.is_file() else found
        if not (folder / "config.json").is_file():
            raise WeightsError(
                f"{found}: Phikon loads from its model folder (config.json + model.safetensors); "
                "point phikon_weights at the folder"
            )
        model = load_vit_folder(folder, architecture="ViT (transformers ViTModel, Phikon)")
        config = model.config
        mean, std = _normalisation(folder)
        identity = {"weights_path": str(folder), "sha256": fingerprint(folder)}
    return PhikonEncoder(
        name="phikon",
        model=model,
        dim=int(config.hidden_size),
        input_px=int(config.image_size),
        mean=mean,
        std=std,
        device=device,
        precision=precision,
        identity=identity,
    )
