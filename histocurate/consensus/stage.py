"""The consensus stage: a campaign's masks -> matching -> re-segmentation -> consensus.

`run_consensus(config, *, project=None, mapper=map, progress=None, force=False) ->
ConsensusRun` (the stage contract, `histocurate.runs`): the plan checks that every tile's
masks are current (made on the exported pixels from the clicks imported now), the tiles are
cut into shards (one item of work each: matching and batched re-segmentation, see
`histocurate.consensus.shards`), then one merge fits the labels over the whole campaign
and writes ``consensus.parquet``, the click fates, the agreement report, QuPath GeoJSON and
overlays, in the campaign folder.

Idempotent: ``consensus.parquet`` records what it was made from (the masks' provenance and
the settings); a run with nothing new writes nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import pandas as pd

from data_schema import ASSIGNMENTS, CONSENSUS, CONSENSUS_FATES
from histocurate.campaign import AnnotatedTiles, Campaign, read_points, resolve_project
from histocurate.config import HistocurateConfig
from histocurate.consensus.agreement import AgreementReport, agreement_report
from histocurate.consensus.core import apply_labels
from histocurate.consensus.export import draw_overlay, save_png, write_geojson
from histocurate.consensus.shards import (
    Shard,
    clear_shards,
    consensus_shard,
    make_shards,
    read_shards,
    shard_key,
    write_frame,
)
from histocurate.digest import json_digest
from histocurate.errors import UserInputError
from histocurate.io import (
    atomic_write_text,
    list_partitions,
    partition_path,
    read_provenance,
    read_table,
)
from histocurate.runs import (
    ItemOutcome,
    ItemWork,
    Mapper,
    Progress,
    Report,
    StageRun,
    run_items,
    timed,
)
from histocurate.segment.plan import legacy_tables, masks_provenance, segmenter_identity
from histocurate.segment.stage import campaign_warnings, segmenter_for
from histocurate.workspace import Workspace


@dataclass
class ConsensusPlan:
    """The campaign's shards and what the consensus would be made from."""

    annotated: AnnotatedTiles
    shards: list[Shard]
    provenance: dict[str, str]
    up_to_date: bool


def plan_consensus(config: HistocurateConfig, project: str, *, force: bool) -> ConsensusPlan:
    """Check the masks are current; list the shards; is the last consensus still right?"""
    ws = Workspace.of(config)
    campaign = ws.campaign(project)
    annotated = AnnotatedTiles.read(ws.assignments, campaign)
    tiles = list_partitions(campaign.masks)
    if not tiles:
        raise UserInputError(
            f"{campaign.masks}: no masks for {project}; run `histocurate segment --project "
            f"{project}` first"
        )
    points = read_points(ws.points, project)
    by_tile = {str(t): g for t, g in points.groupby("tile_id", sort=True)}
    stale = []
    made_from: dict[str, dict[str, str]] = {}
    for tile_id in sorted(set(tiles) | {t for t in by_tile if t in annotated}):
        stored = read_provenance(partition_path(campaign.masks, tile_id))
        group = by_tile.get(tile_id)
        if group is None or tile_id not in annotated:
            stale.append(tile_id)  # masks of clicks deleted since, or of a tile not exported
            continue
        wanted = masks_provenance(annotated, tile_id, group, stored.get("segmenter", ""))
        if stored != wanted:
            stale.append(tile_id)
        made_from[tile_id] = stored
    if stale:
        raise UserInputError(
            f"the masks of {len(stale)} tile(s) of {project} are not those of the clicks "
            f"imported now or of the exported pixels (first: {', '.join(stale[:3])}); run "
            f"`histocurate segment --project {project}` first"
        )
    settings = config.consensus.model_dump(mode="json", exclude={"overlays", "shard_tiles"})
    reseg = segmenter_identity(config, segmenter_for(config).name) if settings["resegment"] else ""
    provenance = {
        "masks": campaign.masks_token(made_from),
        "settings": json_digest([settings, reseg]),
    }
    current = campaign.consensus.exists() and read_provenance(campaign.consensus) == provenance
    shards = make_shards(tiles, config.consensus.shard_tiles)
    return ConsensusPlan(annotated, shards, provenance, current and not force)


@dataclass
class ConsensusRun(StageRun):
    """What a consensus run of a campaign wrote and found."""

    stage: ClassVar[str] = "consensus"
    project: str = ""
    table: Path = Path(".")
    nuclei: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: AgreementReport | None = None
    geojson: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    resegmented: int = 0
    up_to_date: bool = False
    tiles_without_pixels: list[str] = field(default_factory=list)
    rescanned_slides: list[str] = field(default_factory=list)
    legacy: list[str] = field(default_factory=list)

    def report(self) -> Report:
        warnings = self.failure_lines()
        if self.tiles_without_pixels:
            warnings.append(
                f"{len(self.tiles_without_pixels)} tile(s) without readable exported pixels "
                f"kept their members' masks: {', '.join(self.tiles_without_pixels[:5])}"
            )
        warnings += campaign_warnings(self.project, self.rescanned_slides, self.legacy)
        if self.up_to_date:
            return Report(
                title=f"Consensus of {self.project}",
                summary=[
                    f"up to date: no new or changed masks since {self.table} was made; "
                    "nothing written"
                ],
                warnings=warnings,
                outputs={"consensus": self.table},
            )
        report = self.agreement
        tables = {}
        if report is not None:
            tables = {
                "per_annotator": report.per_annotator,
                "pairwise": report.pairwise,
                "fleiss": report.fleiss,
                "dropped": report.dropped,
            }
        return Report(
            title=f"Consensus of {self.project}",
            summary=[
                f"{len(self.nuclei)} nuclei ({self.resegmented} re-segmented) from "
                f"{len(self.done)} shard(s) in {self.seconds:.1f} s; {len(self.geojson)} "
                f"GeoJSON, {len(self.overlays)} overlays"
            ],
            body=report.to_markdown() if report is not None else None,
            tables=tables,
            warnings=warnings,
            images=list(self.overlays),
            outputs={"consensus": self.table},
        )


def _expected(ws: Workspace, project: str) -> pd.DataFrame:
    table = read_table(ws.assignments, ASSIGNMENTS, columns=["project", "tile_id", "annotator"])
    return table.loc[table["project"] == project, ["tile_id", "annotator"]]


def merge(config: HistocurateConfig, plan: ConsensusPlan, keys: list[str]) -> ConsensusRun:
    """Labels over the whole campaign, then the table, fates, exports and the report."""
    cfg = config.consensus
    ws = Workspace.of(config)
    campaign = plan.annotated.campaign
    nuclei, fates = read_shards(campaign, keys)
    labelled, fit = apply_labels(nuclei, label_rule=cfg.label_rule)
    table = labelled[CONSENSUS.column_names].reset_index(drop=True)
    per_tile = fates.groupby("tile_id")["annotator"].nunique()
    single = sorted(per_tile.index[per_tile.to_numpy() < 2].astype(str))
    report = agreement_report(
        fates, table, expected=_expected(ws, campaign.project), single_annotator_tiles=single
    )
    if fit is not None:
        report.summary["Dawid-Skene iterations"] = fit.iterations
        agree = table["label_majority"].fillna("-") == table["label_dawid_skene"].fillna("-")
        report.summary["majority = Dawid-Skene"] = float(agree.mean())
    write_frame(fates, campaign.consensus_fates, CONSENSUS_FATES)
    folder = campaign.reports("consensus")
    atomic_write_text(folder / "agreement.md", report.to_markdown())
    for name in ("per_annotator", "pairwise", "fleiss", "dropped"):
        atomic_write_text(folder / f"{name}.csv", getattr(report, name).to_csv(index=False))
    atomic_write_text(folder / "confusion.csv", report.confusion.to_csv())
    geojson = write_geojson(table, campaign.qupath) if cfg.geojson else []
    overlays = (
        write_overlays(table, fates, plan.annotated, folder / "overlays", limit=cfg.overlays)
        if cfg.overlays
        else []
    )
    # the table last, with its provenance: a run interrupted before is redone in full
    from histocurate.io import write_table

    if table.empty:
        write_table(
            CONSENSUS.to_arrow().empty_table(),
            campaign.consensus,
            CONSENSUS,
            provenance=plan.provenance,
        )
    else:
        write_table(table, campaign.consensus, CONSENSUS, provenance=plan.provenance)
    return ConsensusRun(
        project=campaign.project,
        table=campaign.consensus,
        nuclei=table,
        agreement=report,
        geojson=geojson,
        overlays=overlays,
        resegmented=int((table["polygon_source"] == "resegmented").sum()),
    )


def review_order(nuclei: pd.DataFrame, fates: pd.DataFrame) -> list[str]:
    """Tiles most worth a look first: most undetermined nuclei plus dropped clicks."""
    undetermined = nuclei.loc[nuclei["label"].isna()].groupby("tile_id").size()
    dropped = fates.loc[fates["status"] != "kept"].groupby("tile_id").size()
    score = undetermined.add(dropped, fill_value=0)
    all_tiles = sorted(set(nuclei["tile_id"]) | set(fates["tile_id"]))
    score = score.reindex(all_tiles, fill_value=0)
    return sorted(all_tiles, key=lambda t: (-score[t], t))


def write_overlays(
    nuclei: pd.DataFrame,
    fates: pd.DataFrame,
    annotated: AnnotatedTiles,
    folder: Path,
    *,
    limit: int,
) -> list[Path]:
    """Overlay PNGs of the ``limit`` tiles most worth reviewing, on the exported pixels."""
    paths = []
    by_tile = dict(tuple(nuclei.groupby("tile_id")))
    lost = fates.loc[fates["status"] != "kept"]
    for tile_id in review_order(nuclei, fates)[:limit]:
        try:
            image = annotated.pixels(tile_id)
        except UserInputError:
            image = None
        part = by_tile.get(tile_id, nuclei.iloc[0:0])
        picture = draw_overlay(
            image, part, size=annotated.side(tile_id), dropped=lost.loc[lost["tile_id"] == tile_id]
        )
        paths.append(save_png(picture, folder / f"{tile_id}.png"))
    return paths


def run_consensus(
    config: HistocurateConfig,
    *,
    project: str | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
    force: bool = False,
) -> ConsensusRun:
    """The consensus of one campaign (see the module docstring)."""

    def run() -> ConsensusRun:
        ws = Workspace.of(config)
        name = resolve_project(project, configured=config.cytomine.project, points_path=ws.points)
        plan = plan_consensus(config, name, force=force)
        campaign: Campaign = plan.annotated.campaign
        from histocurate.campaign import check_unchanged_slides

        rescanned = check_unchanged_slides(ws.tiles, plan.annotated)
        legacy = [str(p) for p in legacy_tables(ws.root)]
        if plan.up_to_date:
            skipped = [ItemOutcome(s.key, "skipped") for s in plan.shards]
            return ConsensusRun(
                skipped,
                project=name,
                table=campaign.consensus,
                up_to_date=True,
                rescanned_slides=rescanned,
                legacy=legacy,
            )
        clear_shards(campaign)
        segmenter = segmenter_for(config) if config.consensus.resegment else None
        work = ItemWork(
            partial(consensus_shard, config=config, annotated=plan.annotated, segmenter=segmenter),
            shard_key,
            "consensus",
        )
        outcomes = run_items(
            work, plan.shards, mapper=mapper, progress=progress, description="consensus"
        )
        if any(o.status == "failed" for o in outcomes):  # no half consensus: the old one stays
            return ConsensusRun(
                outcomes,
                project=name,
                table=campaign.consensus,
                rescanned_slides=rescanned,
                legacy=legacy,
            )
        result = merge(config, plan, [o.item for o in outcomes])
        clear_shards(campaign)
        result.outcomes = outcomes
        result.tiles_without_pixels = sorted(
            {t for o in outcomes for t in o.extra.get("tiles_without_pixels", [])}
        )
        result.rescanned_slides, result.legacy = rescanned, legacy
        return result

    result, seconds = timed(run)
    result.seconds = seconds
    return result
