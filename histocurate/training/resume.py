"""Run folders by name, and ``--resume RUN``: the run's own settings, checked against what
this call asks for.

A resume continues a run exactly, so it must be the same run: the same dataset version
(and content), the same held-out fold and the same settings. Only the number of epochs
(to train longer), the time budget and the loader workers may change; any other flag that
disagrees with the run's ``config.json`` is refused, naming the keys and both values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from histocurate.cellvit.presets import TrainSettings, settings_from
from histocurate.cellvit.rundir import RunDir
from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.training.inputs import DatasetChoice, resolve

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


def runs_root(config: HistocurateConfig) -> Path:
    return config.resolve(config.train.runs_dir)


def run_name(choice: DatasetChoice, fold: int, preset: str, given: str | None) -> str:
    """``given`` (checked), else ``<dataset>-<version>-f<fold>-<preset>-<UTC time>``."""
    if given is not None:
        if not _NAME.match(given):
            raise UserInputError(f"run name {given!r} cannot name a folder")
        return given
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{choice.name}-{choice.version[:8]}-f{fold}-{preset}-{stamp}"


def find_run(config: HistocurateConfig, ref: str) -> RunDir:
    """A run by folder name under the runs folder, or by path."""
    root = runs_root(config)
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else [root / ref, config.workspace / ref, path]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return RunDir(candidate.resolve())
    known = (
        sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
        if root.is_dir()
        else []
    )
    raise UserInputError(
        f"--resume {ref}: no run of that name in {root} (runs there: "
        f"{', '.join(known[-10:]) or 'none'})"
    )


@dataclass(frozen=True)
class Resumed:
    run: RunDir
    settings: TrainSettings
    choice: DatasetChoice
    fold: int
    record: dict[str, Any]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{k}: run {old.get(k)!r}, now {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def resume_run(
    config: HistocurateConfig,
    ref: str,
    *,
    requested: dict[str, Any],
    preset: str | None,
    dataset: str | None,
    fold: int | None,
    weights: Path | None,
) -> Resumed:
    """The run ``ref`` and its settings with the changes a resume allows (module docstring)."""
    run = find_run(config, ref)
    record = run.read_config()
    saved = settings_from(record["settings"])
    asked = settings_from({**saved.model_dump(mode="json"), **requested})
    problems = _differences(saved.comparable(), asked.comparable())
    if preset is not None and preset != saved.preset:
        problems.append(f"preset: run {saved.preset!r}, now {preset!r}")
    kept = record.get("weights")
    if weights is not None and str(weights) != kept:
        problems.append(f"weights: run {kept!r}, now {str(weights)!r}")
    data = record["dataset"]
    if dataset is not None:
        name, _, version = dataset.partition("@")
        if name != data["name"] or (version and not str(data["version"]).startswith(version)):
            problems.append(f"dataset: run {data['name']}@{data['version']}, now {dataset}")
    if fold is not None and fold != record["fold"]:
        problems.append(f"fold: run {record['fold']}, now {fold}")
    if problems:
        raise UserInputError(
            f"--resume {run.name}: the run was made with other settings ({'; '.join(problems)}); "
            "a resume continues the same run: drop those flags, or start a new run without "
            "--resume"
        )
    choice = resolve(config, f"{data['name']}@{data['version']}")
    if choice.content_hash != data.get("content_hash"):
        raise UserInputError(
            f"--resume {run.name}: dataset {choice.spec} changed since the run started "
            "(content hash differs); start a new run"
        )
    if not run.last.is_file():
        raise UserInputError(
            f"--resume {run.name}: the run saved no {run.last.name} yet (it stopped before "
            "its first epoch ended); start it again without --resume"
        )
    return Resumed(run, asked, choice, int(record["fold"]), record)
