"""Typed flow parameters: what a deployment's run form shows and checks before a run.

Each stage flow takes its common settings as parameters typed here (ranges, choices,
patterns), described in the flow's docstring; Prefect turns them into the deployment's
parameter schema, so the UI's form offers the choices and refuses a bad value before the
run starts, and `flow.validate_parameters` refuses it in-process. A parameter left at
``None`` keeps the workspace's setting (``histocurate.toml``, then the built-in default):
the same layering as the CLI's flags. ``overrides`` (nested like the file) stays for the
rest; a typed parameter wins over the same key in ``overrides``.

Messages written for the CLI name its flags (``lower --n-tiles``); `name_parameters`
rewrites them to the flow's parameters when the run came from a deployment.

>>> settings({"selection": {"n_tiles": 12, "seed": None}}, {"selection": {"seed": 3}})
{'selection': {'seed': 3, 'n_tiles': 12}}
>>> name_parameters("lower --n-tiles / --n-uncertain; run `histocurate embed --force`",
...                 {"n_tiles", "n_uncertain", "force"})
"lower parameter 'n_tiles' / parameter 'n_uncertain'; run `histocurate embed --force`"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from histocurate.errors import UserInputError, WorkspaceError

Fraction = Annotated[float, Field(ge=0, le=1)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
Threshold = Annotated[float, Field(ge=0, lt=1)]
Positive = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]
Amount = Annotated[int, Field(ge=0)]
EncoderName = Annotated[str, Field(pattern=r"^(builtin|phikon|h0-mini|timm:\S+)$")]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Segmenter = Literal["auto", "nuclick", "watershed"]
LabelRule = Literal["majority", "dawid-skene"]
Arm = Literal["diversity", "rare", "uncertainty"]
Multilabel = Literal["each", "split"]
Aggregate = Literal["pooled", "tile_mean"]
Match = Literal["auto", "masks", "points"]
ExtraTiles = Literal["error", "drop", "empty"]
Indication = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def settings(
    typed: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Configuration overrides from a flow's typed parameters (None: not given) over its
    free-form ``overrides``; paths become strings."""
    given = {
        section: {
            k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None
        }
        for section, values in typed.items()
    }
    return _merge(dict(overrides or {}), {s: v for s, v in given.items() if v})


_FLAG = re.compile(r"(?<![\w`-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
_CODE = re.compile(r"(`[^`]*`)")


def name_parameters(message: str, parameters: Iterable[str]) -> str:
    """``message`` with each CLI flag that is one of ``parameters`` named as the parameter
    (``--n-tiles`` -> ``parameter 'n_tiles'``); commands in backticks are left whole."""
    names = set(parameters)

    def rename(match: re.Match[str]) -> str:
        name = match.group(1).replace("-", "_")
        return f"parameter {name!r}" if name in names else match.group(0)

    parts = _CODE.split(message)
    return "".join(part if part.startswith("`") else _FLAG.sub(rename, part) for part in parts)


def _left_unset(text: str, variable: str) -> bool:
    """Whether a deployment parameter is empty or still the placeholder of ``variable``
    (``prefect deploy`` leaves ``{{ $VARIABLE }}`` as text, or empty, when it is unset)."""
    return not text or "{{" in text or variable in text


def checked_workspace(workspace: str | None) -> str:
    """The ``workspace`` parameter, refused with what to set when a deployment left it unset
    (``prefect deploy`` keeps ``{{ $HISTOCURATE_WORKSPACE }}`` as text when the variable
    is missing) or when it is no workspace."""
    text = (workspace or "").strip()
    if _left_unset(text, "HISTOCURATE_WORKSPACE"):
        raise WorkspaceError(
            f"parameter 'workspace' is not set ({workspace!r}): deploy with "
            "HISTOCURATE_WORKSPACE=/path/to/workspace (and HISTOCURATE_REPO=/path/to/the/"
            "repository) set, as prefect.yaml reads them, or give workspace= to the run"
        )
    if not (Path(text).expanduser() / "histocurate.toml").is_file():
        raise WorkspaceError(
            f"parameter 'workspace': {text} is not a histocurate workspace (no "
            "histocurate.toml) on the machine running this flow: check HISTOCURATE_WORKSPACE "
            f"of the deployment (or create it with `histocurate init {text}`)"
        )
    return text


def checked_checkpoint(checkpoint: str | None) -> str:
    """The ``checkpoint`` parameter of a predict flow, refused before any work when a
    deployment left it unset (``prefect deploy`` makes ``{{ $HISTOCURATE_CHECKPOINT }}``
    an empty string, or keeps it as text, when the variable is missing): an empty path
    would otherwise be read as the current folder.

    >>> checked_checkpoint(" runs/lung-1 ")
    'runs/lung-1'
    """
    text = (checkpoint or "").strip()
    if _left_unset(text, "HISTOCURATE_CHECKPOINT"):
        raise UserInputError(
            f"parameter 'checkpoint' is not set ({checkpoint!r}): deploy again with "
            "HISTOCURATE_CHECKPOINT=<a checkpoint file, or a run name under the workspace's "
            "runs/> set, as prefect.yaml reads it, or give checkpoint= to the run"
        )
    return text
