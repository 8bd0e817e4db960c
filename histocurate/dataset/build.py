"""`histocurate dataset build`: a campaign's annotations as a versioned dataset.

The stage contract (`histocurate.runs`): `run_dataset_build` plans (reads and checks the
campaign, checks the frozen images, assigns folds, derives the version), skips a version
that exists, runs the work per slide through ``mapper`` (each slide's tiles rasterised and
encoded into a part file of the staging folder), then joins the parts, describes the
version and publishes it by one rename. A tile whose frozen image is missing or altered is
named and left out (the others are built, exit code 2); any other failure leaves no
version and changes nothing already written.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from data_schema import ASSIGNMENTS
from histocurate.config import HistocurateConfig
from histocurate.dataset.assemble import write_part
from histocurate.dataset.checks import parse_polygons
from histocurate.dataset.folds import assign_folds
from histocurate.dataset.inputs import CampaignInputs, read_campaign
from histocurate.dataset.run import DatasetRun
from histocurate.dataset.store import (
    DatasetVersion,
    check_name,
    commit,
    datasets_root,
    list_datasets,
    staging,
    version_of,
    workspace_path,
)
from histocurate.dataset.tilework import TilePlan, campaign_tile
from histocurate.digest import json_digest
from histocurate.errors import UserInputError
from histocurate.io import read_table
from histocurate.labels import LABELS
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, run_items, skipped
from histocurate.workspace import Workspace


@dataclass(frozen=True)
class SlideWork:
    """The tiles of one slide to build, with their nuclei (plain values: picklable)."""

    slide_id: str
    tiles: tuple[TilePlan, ...]
    nuclei: pd.DataFrame


def build_slide(work: SlideWork, *, mpp: float, parts: str) -> ItemOutcome:
    """Rasterise and encode the tiles of one slide into a part of the staging folder."""
    start = time.perf_counter()
    groups = dict(tuple(work.nuclei.groupby("tile_id", sort=False)))
    empty = work.nuclei.iloc[0:0]
    results = [campaign_tile(p, groups.get(p.tile_id, empty), mpp=mpp) for p in work.tiles]
    write_part(results, Path(parts), work.slide_id)
    vanished = [v for r in results for v in r.vanished]
    return ItemOutcome(
        work.slide_id,
        "done",
        count=len(results),
        seconds=time.perf_counter() - start,
        extra={
            "nuclei": sum(len(r.nuclei) for r in results),
            "contested_pixels": sum(r.contested_pixels for r in results),
            "resampled": sum(bool(r.row["resampled"]) for r in results),
            "vanished": vanished,
        },
    )


def _slide_of(work: SlideWork) -> str:
    return work.slide_id


def _project(config: HistocurateConfig, project: str | None) -> str:
    if project or config.cytomine.project:
        return str(project or config.cytomine.project)
    ws = Workspace.of(config)
    if not ws.assignments.exists():
        raise UserInputError(
            f"{ws.assignments}: nothing exported yet; run `histocurate export --project NAME`"
        )
    found = sorted(read_table(ws.assignments, ASSIGNMENTS, columns=["project"])["project"].unique())
    if len(found) == 1:
        return str(found[0])
    raise UserInputError(
        f"several campaigns in {ws.assignments} ({', '.join(found)}): pass --project NAME"
    )


def _bad_images(inputs: CampaignInputs) -> dict[str, str]:
    """Tiles whose frozen image is missing or not the one exported (with the error)."""
    bad = {}
    for tile in inputs.tiles.index:
        path = inputs.campaign.image_path(str(tile))
        try:
            ok = hashlib.sha256(path.read_bytes()).hexdigest() == inputs.annotated.sha256(tile)
        except OSError:
            ok = False
        if not ok:
            try:
                inputs.annotated.pixels(str(tile))
                bad[str(tile)] = f"{path}: cannot be read"
            except UserInputError as exc:
                bad[str(tile)] = str(exc)
    return bad


def _nuclei_digest(nuclei: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    ordered = nuclei.sort_values(["tile_id", "source", "source_id"], kind="stable")
    columns = ["tile_id", "source", "source_id", "label", "labels", "annotators", "n_annotators"]
    values: list[list[Any]] = [ordered[c].tolist() for c in columns]
    for row, polygon in zip(zip(*values, strict=True), ordered["polygon"].tolist(), strict=True):
        tile, source, source_id, label, labels, annotators, n = row
        text = "\x1f".join(
            [
                str(tile),
                str(source),
                str(source_id),
                str(label),
                ",".join(labels),
                ",".join(annotators),
                str(n),
            ]
        )
        digest.update(text.encode() + b"\x1e" + bytes(polygon) + b"\x1d")
    return digest.hexdigest()


def _plans(inputs: CampaignInputs, fold_of: dict[str, int]) -> list[SlideWork]:
    tiles = inputs.tiles
    columns = ["tile_id", "source", "source_id", "label", "labels", "annotators",
               "n_annotators", "polygon"]  # fmt: skip
    nuclei = inputs.nuclei[columns]
    by_slide = dict(tuple(nuclei.groupby(nuclei["tile_id"].map(tiles["slide_id"]), sort=False)))
    items = []
    for slide, group in tiles.groupby("slide_id", sort=True):
        rows: list[Any] = list(group.itertuples(index=False))
        plans = tuple(
            TilePlan(
                tile_id=str(r.tile_id),
                slide_id=str(slide),
                indication=str(r.indication),
                cohort=str(r.cohort),
                project=inputs.project,
                arm=None if pd.isna(r.arm) else str(r.arm),
                source=str(r.source),
                image_path=str(inputs.campaign.image_path(str(r.tile_id))),
                sha256=str(r.image_sha256),
                source_mpp=float(r.tile_mpp),
                source_px=int(r.tile_px),
                fold=fold_of[str(slide)],
            )
            for r in rows
        )
        mine = by_slide.get(slide, nuclei.iloc[0:0])
        items.append(SlideWork(str(slide), plans, mine.reset_index(drop=True)))
    return items


def _existing(root: Path, name: str, version: str) -> DatasetVersion | None:
    found = [v for v in list_datasets(root, name) if v.version == version]
    return found[0] if found else None


def run_dataset_build(
    config: HistocurateConfig,
    *,
    name: str,
    project: str | None = None,
    source: str | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
) -> DatasetRun:
    """Build dataset ``name`` from a campaign (the stage contract; module docstring)."""
    start = time.perf_counter()
    name = check_name(name)
    section = config.dataset
    source = source or section.source
    if source not in ("consensus", "masks"):
        raise UserInputError(f"--source must be 'consensus' or 'masks', not {source!r}")
    project = _project(config, project)
    inputs = read_campaign(config, project, source)
    parse_polygons(inputs.nuclei, inputs.tiles["tile_px"], project)
    bad = _bad_images(inputs)
    failed = [ItemOutcome(t, "failed", error=e, input_error=True) for t, e in bad.items()]
    tiles = inputs.tiles.drop(index=list(bad))
    if tiles.empty:
        raise UserInputError(
            f"no tile of campaign {project!r} has a usable image: "
            + "; ".join(list(bad.values())[:3])
        )
    inputs.tiles = tiles
    inputs.nuclei = inputs.nuclei[inputs.nuclei["tile_id"].isin(tiles.index)]
    typed = inputs.nuclei[inputs.nuclei["label"].notna()]
    typed = typed.assign(slide_id=typed["tile_id"].map(tiles["slide_id"]))
    counts = pd.crosstab(typed["slide_id"], typed["label"]).reindex(
        index=sorted(tiles["slide_id"].unique()), columns=list(LABELS), fill_value=0
    )
    folds = assign_folds(
        counts, tiles.groupby("slide_id").size(), n_folds=section.folds, seed=section.seed
    )
    described = tiles[
        ["slide_id", "indication", "cohort", "arm", "image_sha256", "tile_mpp", "tile_px", "source"]
    ].astype(str)
    version = version_of(
        {
            "kind": "campaign",
            "project": project,
            "source": source,
            "mpp": section.mpp,
            "folds": section.folds,
            "seed": section.seed,
            "tiles": [
                [t, *row] for t, row in zip(described.index, described.values.tolist(), strict=True)
            ],
            "nuclei": _nuclei_digest(inputs.nuclei),
        }
    )
    root = datasets_root(config.workspace)
    items = _plans(inputs, folds.slide_fold)
    run = DatasetRun(name=name, version=version, warnings=list(inputs.warnings))
    run.timings["plan"] = time.perf_counter() - start
    existing = _existing(root, name, version)
    if existing is not None:
        run.outcomes = skipped(i.slide_id for i in items) + failed
        run.status, run.path, run.info = "up to date", existing.path, existing.info()
        run.card = existing.card.read_text(encoding="utf-8")
        run.seconds = time.perf_counter() - start
        return run
    with staging(root, name, version) as tmp:
        parts = tmp / "_parts"
        parts.mkdir()
        work = ItemWork(
            partial(build_slide, mpp=section.mpp, parts=str(parts)), _slide_of, "dataset"
        )
        tiles_start = time.perf_counter()
        outcomes = run_items(
            work, items, mapper=mapper, progress=progress, description="building tiles"
        )
        run.outcomes = outcomes + failed
        if any(o.status == "failed" for o in outcomes):
            run.seconds = time.perf_counter() - start
            return run  # no version: the staging folder goes away
        vanished = [v for o in outcomes for v in o.extra.get("vanished", [])]
        left_out = [{"tile_id": t, "reason": r} for t, r in sorted(inputs.left_out.items())]
        left_out += [{"tile_id": t, "reason": f"image unusable: {e}"} for t, e in bad.items()]
        from histocurate import __version__
        from histocurate.dataset.assemble import finish_version

        base = {
            "source": source,
            "project": project,
            "mpp": section.mpp,
            "folds": {
                "n": folds.n_folds,
                "seed": folds.seed,
                "official": False,
                "slides": folds.slide_fold,
                "uncovered": folds.uncovered,
            },
            "rasterisation": {
                "contested_pixels": int(run.total("contested_pixels")),
                "resampled_tiles": int(run.total("resampled")),
                "vanished": vanished,
            },
            "left_out": left_out,
            "provenance": {
                **inputs.provenance,
                "assignments": workspace_path(Workspace.of(config).assignments, config.workspace),
                "config_hash": json_digest(section.model_dump(mode="json")),
                "histocurate_version": __version__,
            },
        }
        assemble_start = time.perf_counter()
        run.timings["tiles"] = assemble_start - tiles_start
        run.info = finish_version(tmp, name=name, version=version, labels=LABELS, base=base)
        run.card = (tmp / "card.md").read_text(encoding="utf-8")
        run.path = commit(tmp, version)
        run.timings["assemble"] = time.perf_counter() - assemble_start
        run.status = "built"
    run.seconds = time.perf_counter() - start
    return run
