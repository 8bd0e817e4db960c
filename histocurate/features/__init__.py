"""Tile features: an encoder registry and the `embed` stage.

Encoders: ``builtin`` (weight-free stain, colour, texture and nuclear features: the
offline default), ``phikon`` (ViT-B/16, transformers), ``h0-mini`` (ViT-B/14 + registers,
timm) and ``timm:<name>``. Output: ``features/<encoder>/<slide>.parquet`` per workspace.

Readers (selection) use `load_features`, which returns a `FeatureMatrix`. Names load
lazily: reading features does not import torch (about 3 s); building an encoder does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histocurate.features.base import Encoder
    from histocurate.features.extract import embed_tile_table
    from histocurate.features.registry import (
        ENCODER_NAMES,
        check_encoder_name,
        get_encoder,
        weights_field,
    )
    from histocurate.features.stage import (
        EmbedPlan,
        EmbedRun,
        embed_item,
        plan_embedding,
        run_embed,
    )
    from histocurate.features.store import (
        FeatureMatrix,
        NonFiniteFeaturesError,
        check_finite,
        load_features,
        write_slide_features,
    )
    from histocurate.features.weights import WeightsError

_WHERE = {
    "Encoder": "base",
    "embed_tile_table": "extract",
    "ENCODER_NAMES": "registry",
    "check_encoder_name": "registry",
    "get_encoder": "registry",
    "weights_field": "registry",
    "EmbedPlan": "stage",
    "EmbedRun": "stage",
    "embed_item": "stage",
    "run_embed": "stage",
    "plan_embedding": "stage",
    "FeatureMatrix": "store",
    "NonFiniteFeaturesError": "store",
    "check_finite": "store",
    "load_features": "store",
    "write_slide_features": "store",
    "WeightsError": "weights",
}

__all__ = [
    "ENCODER_NAMES",
    "EmbedPlan",
    "EmbedRun",
    "Encoder",
    "FeatureMatrix",
    "NonFiniteFeaturesError",
    "WeightsError",
    "check_encoder_name",
    "check_finite",
    "embed_item",
    "embed_tile_table",
    "get_encoder",
    "load_features",
    "plan_embedding",
    "run_embed",
    "weights_field",
    "write_slide_features",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'histocurate.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"histocurate.features.{module}"), name)
