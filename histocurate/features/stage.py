"""The `embed` stage on a workspace: tiles table in, ``features/<encoder>/`` out.

`run_embed(config, *, mapper=map, progress=None, ...) -> EmbedRun` (the stage contract,
`histocurate.runs`): the plan lists the slides whose features are missing or stale, each
is one item of work (`embed_item`: the slide's tiles through a DataLoader and the encoder,
built once per process), and features of slides that lost their tiles are removed.

A slide's features file records the token of the tiles it was made from (their
provenance): a slide retiled since (re-scanned, new tiling settings) is embedded again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import pandas as pd

from data_schema import TILES
from histocurate.config import HistocurateConfig
from histocurate.errors import WorkspaceError
from histocurate.features.base import Encoder
from histocurate.features.extract import READ_COLUMNS, TileReader, embed_tile_table
from histocurate.features.registry import cached_encoder, check_encoder_name, get_encoder
from histocurate.features.store import prepare_output
from histocurate.io import (
    list_partitions,
    partition_path,
    provenance_token,
    read_partition,
    read_provenance,
)
from histocurate.runs import (
    ItemFailed,
    ItemOutcome,
    ItemWork,
    Mapper,
    Progress,
    Report,
    StageRun,
    run_items,
    skipped,
    timed,
)
from histocurate.workspace import Workspace


@dataclass(frozen=True, slots=True)
class EmbedPlan:
    """What a run will do: where it writes, which slides it embeds and which it skips."""

    encoder: str
    out_dir: Path
    pending: list[str]
    skipped: list[str]
    stale: list[str] = field(default_factory=list)  # features of slides without tiles now
    identity: dict[str, object] = field(default_factory=dict)
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)  # per pending slide


def tile_slides(workspace: Workspace) -> list[str]:
    """Slides that have a tiles file; a workspace without any is a `WorkspaceError`."""
    slides = list_partitions(workspace.tiles)
    if not slides:
        raise WorkspaceError(
            f"{workspace.root}: no tiles yet ({workspace.tiles} is missing or empty); run "
            "`histocurate tile` first"
        )
    return slides


def read_slide_tiles(workspace: Workspace, slide_id: str) -> pd.DataFrame:
    """The columns of one slide's tiles that reading needs."""
    return read_partition(workspace.tiles, slide_id, TILES, columns=list(READ_COLUMNS))


def features_provenance(workspace: Workspace, slide_id: str) -> dict[str, str]:
    """What one slide's features are made from: its tiles, by their provenance's token."""
    tiles = read_provenance(partition_path(workspace.tiles, slide_id))
    return {"tiles": provenance_token(tiles)}


def features_are_stale(workspace: Workspace, encoder: str, slide_id: str) -> bool:
    """True when the slide's features file was made from other tiles than its tiles file
    holds now (retiled since). A pair written before provenance was recorded (neither file
    has one) cannot be told apart and passes; old features beside new tiles do not."""
    made_from = read_provenance(partition_path(workspace.features(encoder), slide_id))
    tiles = read_provenance(partition_path(workspace.tiles, slide_id))
    if not made_from and not tiles:
        return False
    return made_from != {"tiles": provenance_token(tiles)}


def encoder_for(
    config: HistocurateConfig, name: str | None = None, *, cached: bool = False
) -> Encoder:
    """The configured encoder (``name`` overrides ``[features] encoder``)."""
    name = check_encoder_name(name or config.features.encoder)
    if cached:
        return cached_encoder(name, config=config.features)
    return get_encoder(name, config=config.features)


def plan_embedding(
    config: HistocurateConfig,
    encoder: Encoder,
    *,
    force: bool = False,
    slide_ids: list[str] | None = None,
) -> EmbedPlan:
    """Check inputs, record the encoder beside the output, and list the work."""
    workspace = Workspace.of(config)
    slides = tile_slides(workspace)
    if slide_ids is not None:
        unknown = [s for s in slide_ids if s not in slides]
        if unknown:
            raise WorkspaceError(f"no tiles for slide(s) {unknown[:5]}; run `histocurate tile`")
        slides = [s for s in slides if s in slide_ids]
    out_dir = workspace.features(encoder.name)
    identity = encoder.identity()
    prepare_output(out_dir, identity, force=force)
    provenance = {s: features_provenance(workspace, s) for s in slides}
    done = {
        s
        for s in list_partitions(out_dir)
        if s in provenance and read_provenance(partition_path(out_dir, s)) == provenance[s]
    }
    pending = [s for s in slides if force or s not in done]
    stale = [s for s in list_partitions(out_dir) if s not in provenance and slide_ids is None]
    return EmbedPlan(
        encoder=encoder.name,
        out_dir=out_dir,
        pending=pending,
        skipped=[s for s in slides if s not in pending],
        stale=stale,
        identity=identity,
        provenance={s: provenance[s] for s in pending},
    )


def embed_item(
    slide_id: str,
    *,
    config: HistocurateConfig,
    encoder: str,
    num_workers: int | None = None,
    reader: TileReader | None = None,
) -> ItemOutcome:
    """Embed one slide (always: the plan already left out the slides that are done).

    The encoder is built once per process and configuration (`cached_encoder`), so the
    slides of a run, or the tasks of a flow in one process, share it.
    """
    model = encoder_for(config, encoder, cached=True)
    workspace = Workspace.of(config)
    # provenance before the tiles: if they are retiled in between, the file is stamped with
    # the older token and redone next time (the other order would stamp old vectors current)
    provenance = features_provenance(workspace, slide_id)
    (outcome,) = embed_tile_table(
        read_slide_tiles(workspace, slide_id),
        model,
        workspace.features(model.name),
        batch_size=config.features.batch_size,
        num_workers=config.features.num_workers if num_workers is None else num_workers,
        force=True,
        slide_ids=[slide_id],
        reader=reader,
        provenance={slide_id: provenance},
    )
    if outcome.status == "failed":
        raise ItemFailed(outcome)
    return outcome


@dataclass
class EmbedRun(StageRun):
    """What an embedding run did: one outcome per slide with tiles."""

    stage: ClassVar[str] = "embed"
    encoder: str = ""
    dim: int = 0
    out_dir: Path = Path(".")
    removed: list[str] = field(default_factory=list)

    def report(self) -> Report:
        tiles = int(sum(o.count for o in self.done))
        busy = sum(o.seconds for o in self.done)
        rate = f", {tiles / busy:.1f} tiles/s while embedding" if busy > 0 and tiles else ""
        summary = [
            f"{tiles} tiles of {len(self.done)} slide(s) embedded with {self.encoder} "
            f"({self.dim} features) in {self.seconds:.1f} s{rate}; {len(self.skipped)} slide(s) "
            f"up to date; {len(self.failed)} failed"
        ]
        if self.removed:
            summary.append(f"removed the features of {len(self.removed)} slide(s) without tiles")
        return Report(
            title=f"Embedding ({self.encoder})",
            summary=summary,
            table=self.outcome_table("tiles").rename(columns={"item": "slide"}),
            warnings=self.failure_lines(),
            outputs={"features": self.out_dir},
        )


def run_embed(
    config: HistocurateConfig,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
    encoder: str | None = None,
    force: bool = False,
    slide_ids: list[str] | None = None,
    loader_workers: int | None = None,
    reader: TileReader | None = None,
) -> EmbedRun:
    """Embed every slide whose features are missing or stale (or ``slide_ids``).

    ``loader_workers`` overrides ``[features] num_workers`` (the flow passes 0: its tasks
    run on threads, which should not fork loader processes).
    """

    def run() -> EmbedRun:
        model = encoder_for(config, encoder, cached=True)
        plan = plan_embedding(config, model, force=force, slide_ids=slide_ids)
        for slide_id in plan.stale:
            partition_path(plan.out_dir, slide_id).unlink(missing_ok=True)
        work = ItemWork(
            partial(
                embed_item,
                config=config,
                encoder=model.name,
                num_workers=loader_workers,
                reader=reader,
            ),
            str,
            "embed",
        )
        outcomes = run_items(
            work, plan.pending, mapper=mapper, progress=progress, description="embedding"
        )
        return EmbedRun(
            skipped(plan.skipped) + outcomes,
            encoder=model.name,
            dim=model.dim,
            out_dir=plan.out_dir,
            removed=plan.stale,
        )

    result, seconds = timed(run)
    result.seconds = seconds
    return result
