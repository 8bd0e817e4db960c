"""The encoder registry: a name -> an `Encoder`, with its weights found locally.

Names: ``builtin`` (no weights, the offline default), ``phikon``, ``h0-mini`` and
``timm:<model name>``. Network encoders are built once per process and configuration and
then reused (`cached_encoder`), so that per-slide tasks do not reload weights.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from histocurate.errors import UserInputError

if TYPE_CHECKING:
    from histocurate.config import FeaturesConfig
    from histocurate.features.base import Encoder


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """One row of the registry: how an encoder is built and where its weights are set."""

    name: str
    builder: str  # "module:function" under histocurate.features, imported when built
    weights_setting: str | None  # the [features] key naming its weights; None: no weights
    description: str
    options: tuple[str, ...] = ()  # other [features] keys passed to the builder


ENCODERS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        "builtin",
        "builtin:build_builtin",
        None,
        "stain, colour, texture and nuclear-density statistics (no weights)",
    ),
    EncoderSpec(
        "phikon",
        "phikon:build_phikon",
        "phikon_weights",
        "Phikon ViT-B/16 (iBOT), 768-d CLS: the paper's selection encoder",
    ),
    EncoderSpec(
        "h0-mini",
        "h0mini:build_h0mini",
        "h0_mini_weights",
        "H0-mini ViT-B/14 with 4 registers: the HistoPLUS backbone",
        options=("h0_mini_pooling",),
    ),
    EncoderSpec(
        "timm:<model name>",
        "timm_encoder:build_timm",
        "timm_weights",
        "any timm ViT, weights from a local file",
    ),
)
"""The encoder registry, one row per encoder (``timm:<model name>`` stands for them all)."""

ENCODER_NAMES: tuple[str, ...] = tuple(spec.name for spec in ENCODERS)


def encoder_spec(name: str) -> EncoderSpec:
    """The registry row of ``name``; `UserInputError` listing the choices if there is none."""
    key = "timm:<model name>" if name.startswith("timm:") and len(name) > 5 else name
    for spec in ENCODERS:
        if spec.name == key:
            return spec
    raise UserInputError(
        f"unknown encoder {name!r}; choose one of: {', '.join(ENCODER_NAMES)} "
        "(e.g. timm:vit_small_patch16_224)"
    )


def check_encoder_name(name: str) -> str:
    """Return ``name`` if it names an encoder; `UserInputError` listing the choices if not."""
    encoder_spec(name)
    return name


def weights_field(name: str, *, flag: str = "--weights") -> str:
    """The ``[features]`` key holding the weights of encoder ``name`` (from `ENCODERS`).

    `UserInputError` if ``name`` is no encoder or takes no weights (``flag`` names the
    option in the message: the CLI's ``--weights``, a flow's ``weights``).

    >>> weights_field("h0-mini"), weights_field("timm:vit_small_patch16_224")
    ('h0_mini_weights', 'timm_weights')
    """
    field = encoder_spec(name).weights_setting
    if field is None:
        raise UserInputError(f"{flag}: encoder {name!r} takes no weights")
    return field


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
    from histocurate.torchutil import resolve_device

    spec = encoder_spec(name)
    config = config or FeaturesConfig()  # type: ignore[call-arg]
    # a device this machine lacks is an error whatever the encoder (builtin ignores it)
    resolve_device(device or config.device)
    module, function = spec.builder.split(":")
    build = getattr(importlib.import_module(f"histocurate.features.{module}"), function)
    if spec.weights_setting is None:
        return build()
    given = weights if weights is not None else getattr(config, spec.weights_setting)
    options = {key.removeprefix("h0_mini_"): getattr(config, key) for key in spec.options}
    args = [name.removeprefix("timm:")] if name.startswith("timm:") else []
    return build(
        *args,
        weights=given,
        hf_cache=config.hf_cache,
        device=device or config.device,
        precision=config.precision,
        random_weights=random_weights,
        **options,
    )


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
