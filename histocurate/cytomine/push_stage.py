"""`histocurate push-consensus` as the CLI and the Prefect flow run it (the stage contract):
the network work is one item per campaign, its per-tile outcomes the run's."""

from __future__ import annotations

import os
import time
from functools import partial

import pandas as pd

from histocurate.config import HistocurateConfig
from histocurate.cytomine.client import connect
from histocurate.cytomine.credentials import (
    ENV_CONSENSUS_PRIVATE,
    ENV_CONSENSUS_PUBLIC,
    ENV_HOST,
    Credentials,
    resolve_credentials,
)
from histocurate.cytomine.fetch import CONSENSUS_LAYER_KEY
from histocurate.cytomine.images import PROJECT_CLASS, ProjectImages, properties, set_property
from histocurate.cytomine.projects import ensure_members, project_info
from histocurate.cytomine.push import nuclei_of_tile, sync_image
from histocurate.cytomine.retry import CytomineCallError
from histocurate.cytomine.runs import PushRun, outcome_dicts
from histocurate.cytomine.stage import credentials_of, policy_of, project_of, unpack
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, run_items
from histocurate.workspace import Workspace


def consensus_credentials_of(config: HistocurateConfig, host: str | None = None) -> Credentials:
    """The keys of the user whose layer holds the consensus (CYTOMINE_CONSENSUS_*)."""
    section = config.cytomine
    return resolve_credentials(
        host=host or os.environ.get(ENV_HOST) or section.host,
        public_key_block=section.consensus_public_key_block,
        private_key_block=section.consensus_private_key_block,
        env_public=ENV_CONSENSUS_PUBLIC,
        env_private=ENV_CONSENSUS_PRIVATE,
    )


def read_consensus(config: HistocurateConfig, project: str) -> pd.DataFrame:
    from data_schema.consensus import CONSENSUS
    from histocurate.io import read_table

    path = Workspace.of(config).campaign(project).consensus
    if not path.exists():
        raise UserInputError(
            f"{path}: no consensus for {project!r} yet; run `histocurate consensus --project "
            f"{project}` first"
        )
    table = read_table(path, CONSENSUS)
    return table[table["project"] == project].reset_index(drop=True)


def _push_item(
    config: HistocurateConfig, host: str | None, shape: str, project: str
) -> ItemOutcome:
    """The network work of a push (one campaign): runs where the task runs."""
    nuclei = read_consensus(config, project)
    layer, policy = consensus_credentials_of(config, host), policy_of(config)
    with connect(layer, policy) as conn:
        layer_id, layer_name = conn.user_id, conn.username
    with connect(credentials_of(config, host), policy) as conn:
        if conn.user_id == layer_id:
            raise UserInputError(
                f"the consensus keys are those of {layer_name!r}, who also runs the campaign: "
                "the consensus layer needs a user of its own (CYTOMINE_CONSENSUS_PUBLIC_KEY / "
                "_PRIVATE_KEY), e.g. histocurate-consensus"
            )
        info = project_info(conn, project)
        ensure_members(conn, info.id, [layer_id])
        props = properties(conn, PROJECT_CLASS, info.id)
        users = {
            u for u in str(props.get(CONSENSUS_LAYER_KEY, {}).get("value") or "").split(",") if u
        } | {layer_name}
        set_property(
            conn, PROJECT_CLASS, info.id, CONSENSUS_LAYER_KEY, ",".join(sorted(users)), props
        )
        images = ProjectImages.read(conn, info.id)
    by_tile = {str(t): g for t, g in nuclei.groupby("tile_id", sort=True)}
    outcomes = []
    with connect(layer, policy) as conn:
        for tile in sorted(set(images.by_tile) | set(by_tile)):
            image = images.of_tile(tile)
            if image is None:
                outcomes.append(
                    ItemOutcome(
                        tile,
                        "failed",
                        input_error=True,
                        error=(
                            f"tile {tile} has consensus nuclei but no image in project "
                            f"{project!r}: run `histocurate export --project {project}`"
                        ),
                    )
                )
                continue
            wanted = nuclei_of_tile(
                by_tile.get(tile, nuclei.iloc[0:0]),
                height=float(image["height"]),
                term_by_label=info.term_by_label,
                shape=shape,
            )
            try:
                outcomes.append(
                    sync_image(
                        conn,
                        project_id=info.id,
                        image_id=int(image["id"]),
                        wanted=wanted,
                        tile=tile,
                    )
                )
            except CytomineCallError as exc:
                outcomes.append(ItemOutcome(tile, "failed", error=str(exc)))
        retries = conn.retries
    failed = any(o.status == "failed" for o in outcomes)
    return ItemOutcome(
        project,
        "failed" if failed else "done",
        count=len(nuclei),
        extra={"tiles": outcome_dicts(outcomes), "layer_user": layer_name, "retries": retries},
    )


def run_push_consensus(
    config: HistocurateConfig,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
    project: str | None = None,
    shape: str | None = None,
    host: str | None = None,
) -> PushRun:
    """`histocurate push-consensus`: the campaign's consensus nuclei as a Cytomine layer."""
    start = time.perf_counter()
    name = project_of(config, project)
    how = shape or config.cytomine.push_as
    if how not in ("polygons", "points"):
        raise UserInputError(f"--as {how!r}: use 'polygons' or 'points'")
    read_consensus(config, name)  # a missing consensus is said before connecting
    work = ItemWork(partial(_push_item, config, host, how), name_of=str, stage="push-consensus")
    [item] = run_items(
        work, [name], mapper=mapper, progress=progress, description=f"push consensus of {name}"
    )
    return PushRun(
        outcomes=unpack(item),
        project=name,
        layer_user=str(item.extra.get("layer_user", "")),
        shape=how,
        retries=int(item.extra.get("retries", 0)),
        seconds=time.perf_counter() - start,
    )
