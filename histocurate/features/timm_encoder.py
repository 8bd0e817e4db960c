"""``timm:<name>``: any timm model with local weights; its pooled output is the feature.

The model is created without a classifier (``num_classes=0``), so the classifier's keys in a
checkpoint are ignored. Input size and normalisation come from the model's own timm data
configuration. Weights: a file given in the configuration (``timm_weights``) or the Hugging
Face cache of ``timm/<name>`` (any tag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from histocurate.errors import UserInputError
from histocurate.features.base import TorchEncoder
from histocurate.features.weights import (
    WeightsError,
    fingerprint,
    hf_cache_roots,
    load_checked,
    load_state_dict,
    resolve_model_dir,
    snapshot_in,
    weight_file_in,
)


class TimmEncoder(TorchEncoder):
    """The model's pooled features (``model(x)`` with the classifier removed)."""

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixels)
        return out.flatten(1)


def create_timm_model(model_name: str, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` without weights; an unknown name is a `UserInputError`."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserInputError(f"encoder 'timm:{model_name}': timm has no model {model_name!r}{hint}")
    return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)


def _find_in_cache(model_name: str, hf_cache: Path | None) -> Path | None:
    for root in hf_cache_roots(hf_cache):
        if not root.is_dir():
            continue
        for repo_dir in sorted(root.glob(f"models--timm--{model_name}*")):
            suffix = repo_dir.name.removeprefix(f"models--timm--{model_name}")
            if suffix and not suffix.startswith("."):
                continue  # another model whose name starts like this one
            snap = snapshot_in(repo_dir)
            if snap is not None:
                return weight_file_in(snap)
    return None


def _load_into(model: Any, file: Path, architecture: str) -> None:
    state = load_state_dict(file)
    classifier = model.pretrained_cfg.get("classifier") or "head"
    prefixes = tuple(
        f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier)
    )
    try:
        load_checked(
            model, state, source=file, architecture=architecture, ignore_unexpected=prefixes
        )
    except WeightsError:
        # Checkpoints in a model's original layout: let timm convert them, then check again.
        import importlib

        module = importlib.import_module(type(model).__module__)
        convert = getattr(module, "checkpoint_filter_fn", None)
        if convert is None:
            raise
        try:
            converted = convert(state, model)
        except Exception:
            converted = None
        if not converted or converted.keys() == state.keys():
            raise
        load_checked(
            model, converted, source=file, architecture=architecture, ignore_unexpected=prefixes
        )


def build_timm(
    model_name: str,
    *,
    weights: Path | None,
    hf_cache: Path | None,
    device: str,
    precision: str,
    random_weights: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> TimmEncoder:
    """``timm:<model_name>`` with weights from ``weights`` or the HF cache (or random)."""
    import timm.data

    model: Any = create_timm_model(model_name, **(model_kwargs or {}))
    name = f"timm:{model_name}"
    identity: dict[str, Any] = {"weights": "random"}
    if not random_weights:
        file: Path | None
        if weights is not None:
            found = resolve_model_dir(
                encoder=name,
                repo_id=f"timm/{model_name}",
                given=weights,
                hf_cache=hf_cache,
                setting="timm_weights",
            )
            file = found if found.is_file() else weight_file_in(found)
        else:
            file = _find_in_cache(model_name, hf_cache)
        if file is None:
            roots = "; ".join(str(r) for r in hf_cache_roots(hf_cache))
            raise WeightsError(
                f"no weights for encoder {name!r} (nothing is downloaded: no network is "
                f"assumed). Looked for models--timm--{model_name}* in: {roots}. Put the "
                f"model's state_dict (.safetensors or .pth) anywhere and set timm_weights = "
                "'/path/to/file' in the features section of histocurate.toml (or pass "
                "--weights)."
            )
        _load_into(model, file, f"timm {model_name}")
        identity = {"weights_path": str(file), "sha256": fingerprint(file)}
    data = timm.data.resolve_data_config({}, model=model)
    size = int(data["input_size"][-1])
    return TimmEncoder(
        name=name,
        model=model,
        dim=int(model.num_features),
        input_px=size,
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        device=device,
        precision=precision,
        identity={**identity, "model_kwargs": model_kwargs or {}},
    )
