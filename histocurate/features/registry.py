"""The encoder registry: a name -> an `Encoder`, with its weights found locally.

Names: ``builtin`` (no weights, the offline default), ``phikon``, ``h0-mini`` and
``timm:<model name>``. Network encoders are built once per process and configuration and
then reused (`cached_encoder`), so that per-slide tasks do not reload weights.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from histocurate.errors import UserInputError

if TYPE_CHECKING:
    from histocurate.config import FeaturesConfig
    from histocurate.features.base import Encoder

ENCODER_NAMES: tuple[str, ...] = ("builtin", "phikon", "h0-mini", "timm:<model name>")


def check_encoder_name(name: str) -> str:
    """Return ``name`` if it names an encoder; `UserInputError` listing the choices if not."""
    if name in ("builtin", "phikon", "h0-mini"):
        return name
    if name.startswith("timm:") and len(name) > len("timm:"):
        return name
    raise UserInputError(
        f"unknown encoder {name!r}; choose one of: {', '.join(ENCODER_NAMES)} "
        "(e.g. timm:vit_small_patch16_224)"
    )


def _weights_setting(name: str, config: FeaturesConfig) -> Path | None:
    if name == "phikon":
        return config.phikon_weights
    if name == "h0-mini":
        return config.h0_mini_weights
    if name.startswith("timm:"):
        return config.timm_weights
    return None


def get_encoder(
    name: str,
    *,
    config: FeaturesConfig | None = None,
    weights: Path | None = None,
    device: str | None = None,
    random_weights: bool = False,
) -> Encoder:
    """Build encoder ``name``.

    ``weights`` overrides the configuration's weight path for this encoder; ``device``
    overrides ``config.device``. ``random_weights`` builds the architecture without
    weights: benchmarks only, and recorded as such beside any features it makes.
    """
    from histocurate.config import FeaturesConfig

    check_encoder_name(name)
    config = config or FeaturesConfig()  # type: ignore[call-arg]
    if name == "builtin":
        from histocurate.features.builtin import BuiltinEncoder

        return BuiltinEncoder()
    given = weights if weights is not None else _weights_setting(name, config)
    common = {
        "weights": given,
        "hf_cache": config.hf_cache,
        "device": device or config.device,
        "precision": config.precision,
        "random_weights": random_weights,
    }
    if name == "phikon":
        from histocurate.features.phikon import build_phikon

        return build_phikon(**common)  # type: ignore[arg-type]
    if name == "h0-mini":
        from histocurate.features.h0mini import build_h0mini

        return build_h0mini(pooling=config.h0_mini_pooling, **common)  # type: ignore[arg-type]
    from histocurate.features.timm_encoder import build_timm

    return build_timm(name.removeprefix("timm:"), **common)  # type: ignore[arg-type]


_cache: dict[tuple[object, ...], Encoder] = {}
_cache_lock = threading.Lock()


def cached_encoder(
    name: str,
    *,
    config: FeaturesConfig | None = None,
    weights: Path | None = None,
    device: str | None = None,
) -> Encoder:
    """`get_encoder`, built once per process for the same arguments (thread-safe)."""
    key = (name, config.model_dump_json() if config else None, str(weights), device)
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = get_encoder(name, config=config, weights=weights, device=device)
            _cache[key] = found
        return found
