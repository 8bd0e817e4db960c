"""The one configuration object that reaches every stage, composed of one section per stage.

Read, lowest priority first, from the workspace's ``histocurate.toml``, then environment
variables ``HISTOCURATE_<SECTION>__<KEY>`` (e.g. ``HISTOCURATE_TILING__TISSUE_THRESHOLD=0.3``;
read by pydantic-settings), then CLI flags. Unknown keys are errors in all three: a typo
never goes silently unused. Secrets (Cytomine keys) are never part of this object; they come
from the environment or a Prefect Secret block at the moment of use.

Each section lives in its own module (``histocurate/config/<section>.py``); this module
composes them and loads them.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from histocurate.config.base import Section
from histocurate.config.cohort import TCGA_INDICATIONS, CohortConfig
from histocurate.config.consensus import ConsensusConfig
from histocurate.config.cytomine import CytomineConfig
from histocurate.config.dataset import DatasetConfig
from histocurate.config.evaluate import EvaluateConfig
from histocurate.config.features import FeaturesConfig
from histocurate.config.predict import PredictConfig
from histocurate.config.prefect import PrefectConfig
from histocurate.config.segment import SegmentConfig
from histocurate.config.selection import ScalerName, SelectionArm, SelectionConfig
from histocurate.config.synth import SynthConfig
from histocurate.config.tiling import TilingConfig
from histocurate.config.train import TrainConfig
from histocurate.errors import WorkspaceError

CONFIG_FILE = "histocurate.toml"
ENV_PREFIX = "HISTOCURATE_"
# read by the CLI to find the workspace, and by prefect.yaml when deploying: not settings
_ENV_NOT_CONFIG = {"HISTOCURATE_WORKSPACE", "HISTOCURATE_REPO"}

__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "TCGA_INDICATIONS",
    "CohortConfig",
    "ConsensusConfig",
    "CytomineConfig",
    "DatasetConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "HistocurateConfig",
    "PredictConfig",
    "PrefectConfig",
    "ScalerName",
    "Section",
    "SegmentConfig",
    "SelectionArm",
    "SelectionConfig",
    "SynthConfig",
    "TilingConfig",
    "TrainConfig",
    "config_from_environment",
    "load_config",
    "render_toml",
]


class HistocurateConfig(Section):
    """Everything a stage may read. One instance per run, passed down explicitly."""

    workspace: Path = Field(Path("."), description="Root of the workspace (set by the loader).")
    cohort: CohortConfig = Field(default_factory=CohortConfig)  # type: ignore[arg-type]
    tiling: TilingConfig = Field(default_factory=TilingConfig)  # type: ignore[arg-type]
    synth: SynthConfig = Field(default_factory=SynthConfig)  # type: ignore[arg-type]
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)  # type: ignore[arg-type]
    selection: SelectionConfig = Field(default_factory=SelectionConfig)  # type: ignore[arg-type]
    segment: SegmentConfig = Field(default_factory=SegmentConfig)  # type: ignore[arg-type]
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)  # type: ignore[arg-type]
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)  # type: ignore[arg-type]
    cytomine: CytomineConfig = Field(default_factory=CytomineConfig)  # type: ignore[arg-type]
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)  # type: ignore[arg-type]
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[arg-type]
    predict: PredictConfig = Field(default_factory=PredictConfig)  # type: ignore[arg-type]
    prefect: PrefectConfig = Field(default_factory=PrefectConfig)  # type: ignore[arg-type]

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def resolve(self, path: Path | str) -> Path:
        """A path from the config, made absolute against the workspace root."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.workspace / path


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass their own)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = {k: v for k, v in environ.items() if k not in _ENV_NOT_CONFIG}
        super().__init__(
            HistocurateConfig,  # type: ignore[arg-type]
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
            case_sensitive=False,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)


def config_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings from ``HISTOCURATE_SECTION__KEY`` variables (JSON values allowed).

    pydantic-settings reads the known sections; a variable naming no section is reported
    as an unknown key here (pydantic-settings would skip it silently).

    >>> config_from_environment({"HISTOCURATE_TILING__TISSUE_THRESHOLD": "0.3"})
    {'tiling': {'tissue_threshold': '0.3'}}
    """
    found: dict[str, Any] = dict(_Environment(environ)())
    sections = set(HistocurateConfig.model_fields) - {"workspace"}
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX) or name in _ENV_NOT_CONFIG:
            continue
        section = name[len(ENV_PREFIX) :].lower().split("__")[0]
        if section not in sections:
            found.setdefault(section, "<set in the environment>")
    return found


def _describe(error: ValidationError, sources: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  unknown key {where!r}")
        else:
            lines.append(f"  {where}: {item['msg']}")
    return f"invalid configuration ({sources}):\n" + "\n".join(lines)


def load_config(
    workspace: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    require_file: bool = True,
) -> HistocurateConfig:
    """Read the configuration of ``workspace``: file < environment < ``overrides``.

    ``overrides`` is nested like the file (``{"tiling": {"tissue_threshold": 0.3}}``).

    >>> import tempfile
    >>> cfg = load_config(tempfile.mkdtemp(), {"tiling": {"tile_size_um": 56}},
    ...                   environ={}, require_file=False)
    >>> cfg.tiling.tile_size_um
    56.0
    """
    root = Path(workspace).expanduser().resolve()
    path = root / CONFIG_FILE
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise WorkspaceError(f"{path}: not valid TOML ({exc})") from None
    elif require_file:
        raise WorkspaceError(
            f"{root} is not a histocurate workspace (no {CONFIG_FILE}); "
            f"create one with `histocurate init {root}`"
        )
    env = config_from_environment(os.environ if environ is None else environ)
    merged = _deep_merge(_deep_merge(data, env), overrides or {})
    merged["workspace"] = root
    try:
        return HistocurateConfig.model_validate(merged)
    except ValidationError as exc:
        raise WorkspaceError(_describe(exc, f"{path}, {ENV_PREFIX}* variables, flags")) from None


def render_toml(config: HistocurateConfig) -> str:
    """The configuration as a ``histocurate.toml`` text (without the workspace path)."""
    lines = ["# histocurate workspace configuration; see `histocurate --help`.", ""]
    dumped = config.model_dump(mode="json", exclude={"workspace"}, exclude_none=True)
    for section, values in dumped.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
