"""The `embed` stage on a workspace: tiles table in, ``features/<encoder>/`` out.

`embed_workspace` is the in-process run (CLI without Prefect, tests); `embed_slide` is the
unit of work of the Prefect flow (one slide, everything passed by path and name). Both use
the same loop (`embed_tile_table`), so their outputs are identical.

A slide's features file records the token of the tiles it was made from (their
provenance): a slide retiled since (re-scanned, new tiling settings) is embedded again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from data_schema import TILES
from histocurate.config import HistocurateConfig
from histocurate.errors import WorkspaceError
from histocurate.features.base import Encoder
from histocurate.features.extract import READ_COLUMNS, SlideOutcome, TileReader, embed_tile_table
from histocurate.features.registry import cached_encoder, check_encoder_name, get_encoder
from histocurate.features.store import prepare_output
from histocurate.io import (
    list_partitions,
    partition_path,
    provenance_token,
    read_partition,
    read_provenance,
)
from histocurate.workspace import Workspace


@dataclass(frozen=True, slots=True)
class EmbedPlan:
    """What a run will do: where it writes, which slides it embeds and which it skips."""

    encoder: str
    out_dir: Path
    pending: list[str]
    skipped: list[str]
    tiles_pending: int = 0
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
    return EmbedPlan(
        encoder=encoder.name,
        out_dir=out_dir,
        pending=pending,
        skipped=[s for s in slides if s not in pending],
        identity=identity,
        provenance={s: provenance[s] for s in pending},
    )


def embed_slide(
    config: HistocurateConfig,
    slide_id: str,
    *,
    encoder: str | None = None,
    force: bool = False,
    num_workers: int | None = None,
    reader: TileReader | None = None,
) -> SlideOutcome:
    """Embed one slide (the flow's task). The encoder is built once per process."""
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
        force=force,
        slide_ids=[slide_id],
        reader=reader,
        provenance={slide_id: provenance},
    )
    return outcome


def embed_workspace(
    config: HistocurateConfig,
    *,
    encoder: str | None = None,
    force: bool = False,
    slide_ids: list[str] | None = None,
    reader: TileReader | None = None,
    progress: Callable[[int], None] | None = None,
    on_slide: Callable[[SlideOutcome], None] | None = None,
    on_plan: Callable[[EmbedPlan], None] | None = None,
) -> list[SlideOutcome]:
    """Embed every pending slide of the workspace in this process (one DataLoader)."""
    model = encoder_for(config, encoder)
    plan = plan_embedding(config, model, force=force, slide_ids=slide_ids)
    workspace = Workspace.of(config)
    frames = [read_slide_tiles(workspace, s) for s in plan.pending]
    tiles = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=READ_COLUMNS)
    if on_plan is not None:
        on_plan(replace(plan, tiles_pending=len(tiles)))
    skipped = [
        SlideOutcome(s, "skipped", 0, path=str(plan.out_dir / f"{s}.parquet")) for s in plan.skipped
    ]
    outcomes = embed_tile_table(
        tiles,
        model,
        plan.out_dir,
        batch_size=config.features.batch_size,
        num_workers=config.features.num_workers,
        force=True,  # the plan already left out the slides that are done
        slide_ids=plan.pending,
        reader=reader,
        provenance=plan.provenance,
        progress=progress,
        on_slide=on_slide,
    )
    return skipped + outcomes
