"""The shared import pipeline: discovered items (chunks of images) -> parts -> a version.

An importer supplies `ImportPlan`: the items to convert (picklable), the function converting
one item into `TileResult`s, the files it reads (their bytes make the version), the folds
(official, or computed here grouped by slide and stratified by class), and its class list.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from histocurate.config import HistocurateConfig
from histocurate.dataset.assemble import write_part
from histocurate.dataset.folds import assign_folds
from histocurate.dataset.run import DatasetRun
from histocurate.dataset.store import (
    check_name,
    commit,
    datasets_root,
    list_datasets,
    staging,
    version_of,
    workspace_path,
)
from histocurate.dataset.tilework import TileResult
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, run_items, skipped


@dataclass
class ImportPlan:
    """What an importer found in a folder (see the module docstring).

    ``convert(item, folds, mpp)`` returns the results of one item; ``folds`` maps slide ->
    fold. ``class_counts`` (slides x labels) is needed when ``folds`` is None.
    """

    format: str
    directory: Path
    items: Sequence[Any]
    item_name: Callable[[Any], str]
    convert: Callable[..., list[TileResult]]
    files: list[Path]
    labels: list[str]
    source_mpp: float
    folds: dict[str, int] | None = None
    class_counts: pd.DataFrame | None = None
    tiles_per_slide: pd.Series | None = None
    notes: list[str] = field(default_factory=list)


def files_digest(directory: Path, files: list[Path]) -> list[list[str]]:
    """Path (relative) and sha256 of every file an import reads."""
    out = []
    for path in sorted(files):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        out.append([str(path.relative_to(directory)), digest.hexdigest()])
    return out


def convert_item(
    item: Any,
    *,
    plan_convert: Callable[..., list[TileResult]],
    folds: dict[str, int],
    mpp: float,
    parts: str,
    key: str,
) -> ItemOutcome:
    start = time.perf_counter()
    results = plan_convert(item, folds=folds, mpp=mpp)
    write_part(results, Path(parts), key)
    return ItemOutcome(
        key,
        "done",
        count=len(results),
        seconds=time.perf_counter() - start,
        extra={
            "nuclei": sum(len(r.nuclei) for r in results),
            "contested_pixels": sum(r.contested_pixels for r in results),
            "resampled": sum(bool(r.row["resampled"]) for r in results),
        },
    )


@dataclass(frozen=True)
class _Keyed:
    key: str
    item: Any


def _convert(keyed: _Keyed, **kwargs: Any) -> ItemOutcome:
    return convert_item(keyed.item, key=keyed.key, **kwargs)


def _key(keyed: _Keyed) -> str:
    return keyed.key


def run_import(
    config: HistocurateConfig,
    plan: ImportPlan,
    *,
    name: str,
    mpp: float | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
) -> DatasetRun:
    """Convert ``plan`` into a version of dataset ``name`` (no-op when it exists)."""
    from histocurate import __version__
    from histocurate.dataset.assemble import finish_version

    start = time.perf_counter()
    name = check_name(name)
    section = config.dataset
    mpp = float(mpp or section.mpp)
    if plan.folds is not None:
        folds, official, uncovered, n_folds = plan.folds, True, [], len(set(plan.folds.values()))
    else:
        assert plan.class_counts is not None and plan.tiles_per_slide is not None
        found = assign_folds(
            plan.class_counts, plan.tiles_per_slide, n_folds=section.folds, seed=section.seed
        )
        folds, official, uncovered, n_folds = (
            found.slide_fold,
            False,
            found.uncovered,
            found.n_folds,
        )
    files = files_digest(plan.directory, plan.files)
    settings = {"kind": plan.format, "mpp": mpp, "source_mpp": plan.source_mpp}
    if not official:
        settings.update(folds=section.folds, seed=section.seed)
    version = version_of({**settings, "files": files})
    keyed = [_Keyed(f"{k:05d}-{plan.item_name(i)}", i) for k, i in enumerate(plan.items)]
    run = DatasetRun(name=name, version=version, warnings=list(plan.notes))
    root = datasets_root(config.workspace)
    existing = [v for v in list_datasets(root, name) if v.version == version]
    if existing:
        run.outcomes = skipped(k.key for k in keyed)
        run.status, run.path, run.info = "up to date", existing[0].path, existing[0].info()
        run.card = existing[0].card.read_text(encoding="utf-8")
        run.seconds = time.perf_counter() - start
        return run
    with staging(root, name, version) as tmp:
        parts = tmp / "_parts"
        parts.mkdir()
        fn = partial(_convert, plan_convert=plan.convert, folds=folds, mpp=mpp, parts=str(parts))
        run.outcomes = run_items(
            ItemWork(fn, _key, "dataset-import"),
            keyed,
            mapper=mapper,
            progress=progress,
            description=f"importing {plan.format}",
        )
        if run.failed:
            run.seconds = time.perf_counter() - start
            return run
        base: dict[str, Any] = {
            "source": plan.format,
            "project": None,
            "mpp": mpp,
            "folds": {
                "n": n_folds,
                "seed": None if official else section.seed,
                "official": official,
                "slides": folds,
                "uncovered": uncovered,
            },
            "rasterisation": {
                "contested_pixels": int(run.total("contested_pixels")),
                "resampled_tiles": int(run.total("resampled")),
                "vanished": [],
            },
            "left_out": [],
            "provenance": {
                "format": plan.format,
                "directory": workspace_path(plan.directory, config.workspace),
                "source_mpp": plan.source_mpp,
                "files": {path: digest for path, digest in files},
                "histocurate_version": __version__,
            },
        }
        run.info = finish_version(tmp, name=name, version=version, labels=plan.labels, base=base)
        run.card = (tmp / "card.md").read_text(encoding="utf-8")
        run.path = commit(tmp, version)
        run.status = "built"
    run.seconds = time.perf_counter() - start
    return run
