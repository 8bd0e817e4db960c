"""`histocurate push-consensus` as the CLI and the Prefect flow run it (the stage contract):
the network work is one item per campaign, its per-tile outcomes the run's.

Where the layer lives. The campaign's projects hide each reader's layer from the others
(and in a per-reader campaign the readers are not even members of the main project), so a
layer there would never reach the pathologists. The consensus goes instead to the review
project ``<project> (review)``: the same uploaded images attached (no second upload), the
campaign's readers as members, every layer shown (``hideUsersLayers`` and
``hideAdminsLayers`` off) and RESTRICTED (``isRestricted``), so a reader sees the consensus
layer beside their own and cannot edit it. The layer belongs to the consensus user (keys
``CYTOMINE_CONSENSUS_PUBLIC_KEY`` / ``_PRIVATE_KEY``), a contributor of the review project.
Every step finds what it would create first: a second push changes nothing.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

import pandas as pd

from histocurate.config import HistocurateConfig
from histocurate.cytomine.assignments import load_assignments
from histocurate.cytomine.client import Connection, connect
from histocurate.cytomine.credentials import (
    ENV_CONSENSUS_PRIVATE,
    ENV_CONSENSUS_PUBLIC,
    ENV_HOST,
    Credentials,
    resolve_credentials,
)
from histocurate.cytomine.export import READER_SEPARATOR
from histocurate.cytomine.fetch import CONSENSUS_LAYER_KEY
from histocurate.cytomine.images import (
    ASSIGNMENT_KEY,
    IMAGE_CLASS,
    PROJECT_CLASS,
    TILE_KEY,
    ProjectImages,
    attach,
    properties,
    set_property,
)
from histocurate.cytomine.projects import (
    REVIEW,
    ensure_members,
    ensure_project,
    project_info,
    project_members,
    projects_named,
    resolve_users,
)
from histocurate.cytomine.push import nuclei_of_tile, sync_image
from histocurate.cytomine.retry import CytomineCallError
from histocurate.cytomine.runs import PushRun, outcome_dicts
from histocurate.cytomine.stage import credentials_of, policy_of, project_of, unpack
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome, ItemWork, Mapper, Progress, run_items
from histocurate.workspace import Workspace

REVIEW_SUFFIX = " (review)"


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


def review_project(project: str) -> str:
    """The name of a campaign's review project (where the consensus layer goes)."""
    return f"{project}{REVIEW_SUFFIX}"


def _readers(
    conn: Connection, config: HistocurateConfig, project: str, main_id: int, images: ProjectImages
) -> dict[str, int]:
    """The campaign's readers (user id by name): those the workspace's assignments or the
    images' ``histocurate.annotators`` name, found among the campaign projects' members."""
    names = set(load_assignments(Workspace.of(config).assignments, project)["annotator"])
    for props in images.props.values():
        value = str(props.get(ASSIGNMENT_KEY, {}).get("value") or "")
        names |= {n for n in value.split(",") if n}
    ids = [main_id] + [int(p["id"]) for p in projects_named(conn, project + READER_SEPARATOR)]
    by_name: dict[str, int] = {}
    for pid in ids:
        by_name.update({name: uid for uid, name in project_members(conn, pid).items()})
    missing = sorted(names - set(by_name))
    if missing:  # a reader removed from the projects since: look the name up
        by_name.update(resolve_users(conn, missing, projects=lambda: ids))
    return {name: by_name[name] for name in sorted(names)}


def _review_images(
    conn: Connection, main: ProjectImages, review: ProjectImages
) -> dict[str, dict[str, Any]]:
    """The review project's image of every tile of the main project: the same uploaded
    image attached (never uploaded again), labelled with its tile."""
    out = {}
    for tile in sorted(main.by_tile):
        image = review.of_tile(tile) or attach(
            conn, review, int(main.by_tile[tile][0]["baseImage"])
        )
        props = review.props.setdefault(int(image["id"]), {})
        set_property(conn, IMAGE_CLASS, int(image["id"]), TILE_KEY, tile, props)
        out[tile] = image
    review.index()
    return out


def _record_layer(conn: Connection, project_id: int, layer_name: str) -> None:
    """Name the layer's user in the project's ``histocurate.consensus_layer`` property, so
    that an import never takes the layer's annotations for clicks."""
    props = properties(conn, PROJECT_CLASS, project_id)
    users = {
        u for u in str(props.get(CONSENSUS_LAYER_KEY, {}).get("value") or "").split(",") if u
    } | {layer_name}
    set_property(
        conn, PROJECT_CLASS, project_id, CONSENSUS_LAYER_KEY, ",".join(sorted(users)), props
    )


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
        main_images = ProjectImages.read(conn, info.id)
        readers = _readers(conn, config, project, info.id, main_images)
        review, _ = ensure_project(
            conn, review_project(project), ontology_id=info.ontology_id, settings=REVIEW
        )
        ensure_members(conn, review.id, [layer_id, *readers.values()])
        _record_layer(conn, info.id, layer_name)  # layers of earlier pushes went there
        _record_layer(conn, review.id, layer_name)
        images = _review_images(conn, main_images, ProjectImages.read(conn, review.id))
    by_tile = {str(t): g for t, g in nuclei.groupby("tile_id", sort=True)}
    outcomes = []
    with connect(layer, policy) as conn:
        for tile in sorted(set(images) | set(by_tile)):
            image = images.get(tile)
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
                term_by_label=review.term_by_label,
                shape=shape,
            )
            try:
                outcomes.append(
                    sync_image(
                        conn,
                        project_id=review.id,
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
        extra={
            "tiles": outcome_dicts(outcomes),
            "layer_user": layer_name,
            "review_project": review.name,
            "readers": ",".join(readers),
            "retries": retries,
        },
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
        review_project=str(item.extra.get("review_project", "")),
        readers=[r for r in str(item.extra.get("readers", "")).split(",") if r],
        shape=how,
        retries=int(item.extra.get("retries", 0)),
        seconds=time.perf_counter() - start,
    )
