"""Models for a training run: a new one from the settings, or a checkpoint's model with its
type head fitted to other classes (fine-tuning).

`adapt_head` keeps every weight and rebuilds only the NT output layer (the 1x1 conv of
``tp_branch.decoder0_header``): new channel k takes the checkpoint's row ``rows[k-1]``
(background stays row 0), or a fresh initialisation where ``rows`` says None. Which
checkpoint class is which dataset class is the caller's decision (it knows the names).

>>> from histocurate.cellvit.model import TINY_ARCH, CellViTConfig, build_model
>>> m = build_model(CellViTConfig(n_types=3, tile_size=56, arch=TINY_ARCH, decoder_divisor=16))
>>> a = adapt_head(m, [2, None])
>>> a.n_types, tuple(a.tp_branch.decoder0_header[2].weight.shape)[:1]
(2, (3,))
>>> bool((a.tp_branch.decoder0_header[2].bias[1] == m.tp_branch.decoder0_header[2].bias[2]))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from histocurate.cellvit.model import CellViT, CellViTConfig, build_model
from histocurate.cellvit.presets import TrainSettings


def model_config(settings: TrainSettings, *, n_types: int, input_size: int) -> CellViTConfig:
    """The architecture the settings ask for, for ``n_types`` classes at ``input_size``."""
    return CellViTConfig(
        encoder=settings.encoder,
        n_types=n_types,
        tile_size=input_size,
        arch=dict(settings.arch),
        decoder_divisor=settings.decoder_divisor,
        drop_path_rate=settings.drop_path_rate,
    )


def new_model(
    settings: TrainSettings,
    *,
    n_types: int,
    input_size: int,
    weights: Path | None = None,
    hf_cache: Path | None = None,
) -> CellViT:
    """A model to train from scratch or from pretrained encoder weights (``weights``, or the
    Hugging Face cache; never the network), seeded by the run seed."""
    torch.manual_seed(settings.seed)
    config = model_config(settings, n_types=n_types, input_size=input_size)
    return build_model(config, pretrained=settings.pretrained, weights=weights, hf_cache=hf_cache)


def adapt_head(model: CellViT, rows: Sequence[int | None]) -> CellViT:
    """``model`` with an NT head of ``len(rows)`` types (module docstring)."""
    if model.config is None:
        raise ValueError("the model has no config: build it with build_model")
    if list(rows) == list(range(1, model.n_types + 1)):
        return model
    old = model.tp_branch.decoder0_header[2]
    assert isinstance(old, nn.Conv2d)
    config = replace(model.config, n_types=len(rows))
    fresh = build_model(config)
    state = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith("tp_branch.decoder0_header.2.")
    }
    missing = fresh.load_state_dict(state, strict=False).missing_keys
    assert all(k.startswith("tp_branch.decoder0_header.2.") for k in missing)
    head = fresh.tp_branch.decoder0_header[2]
    assert isinstance(head, nn.Conv2d)
    with torch.no_grad():
        for new, source in enumerate([0, *rows]):
            if source is not None:
                head.weight[new].copy_(old.weight[source])
                assert head.bias is not None and old.bias is not None
                head.bias[new].copy_(old.bias[source])
    return fresh
