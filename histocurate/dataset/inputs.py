"""What a dataset build reads from a campaign, checked before anything is written.

Read: the exported tiles (assignments: slide, indication, resolution, image sha256), the
masks partitions (``campaigns/<project>/masks.parquet/``, with their provenance), the
consensus (``consensus.parquet`` and its provenance) when it is used, the selection arm of
each tile, and the cohort of the slides (the tiles table, read only for those slides).

Which nuclei a tile gets:

- ``--source consensus``: tiles with masks of at least two annotators get their consensus
  nuclei (none when the consensus kept none); single-annotator tiles are left out.
- ``--source masks``: single-annotator tiles get that annotator's masks (clicks sharing one
  polygon are one nucleus, with the set of labels given); a tile with several annotators
  gets its consensus nuclei, and is an error when no consensus exists.

Staleness: the consensus records the token of the masks it was made from
(``{"masks": campaign_masks_token(campaign)}`` in its provenance), a digest over the whole
campaign's masks; only the multi-annotator tiles' masks matter to the nuclei a build takes
from it. When the token differs, the build rebuilds it with the single-annotator tiles as
the consensus saw them (their clicks are in ``consensus_fates.parquet``; tiles annotated
since are left out): if that matches, only single-annotator tiles changed and the
consensus is current for this build. Otherwise the build stops, names the multi-annotator
tiles whose clicks changed and the command that refreshes the consensus. Masks drawn on other pixels
than the exported image (provenance ``pixels``) are refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from data_schema import CONSENSUS, MASKS, SELECTION, SLIDES, TILES
from histocurate.campaign import AnnotatedTiles, Campaign
from histocurate.config import HistocurateConfig
from histocurate.dataset.store import workspace_path
from histocurate.errors import UserInputError
from histocurate.io import list_partitions, partition_path, read_provenance, read_table
from histocurate.workspace import Workspace

NUCLEUS_COLUMNS = [
    "tile_id",
    "source",
    "source_id",
    "label",
    "labels",
    "annotators",
    "n_annotators",
    "polygon",
    "origin",
    "row",
]


def campaign_masks_token(campaign: Campaign, provenance: dict[str, dict] | None = None) -> str:
    """Token of a campaign's masks as they are now (`Campaign.masks_token`, the one the
    consensus stage stamps as ``{"masks": token}``)."""
    return campaign.masks_token(provenance)


@dataclass
class CampaignInputs:
    """Everything a build of one campaign reads (see the module docstring)."""

    project: str
    campaign: Campaign
    annotated: AnnotatedTiles
    tiles: pd.DataFrame  # one row per tile of the dataset (tile_id index)
    nuclei: pd.DataFrame  # NUCLEUS_COLUMNS
    provenance: dict[str, object] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # tile -> why (not an error)
    warnings: list[str] = field(default_factory=list)


def _read_masks(campaign: Campaign, project: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Every masks partition of the campaign (schema-checked), with the file and row of each
    mask for error messages, and each partition's provenance."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from histocurate.io.tables import PROVENANCE_KEY, check_arrow_schema

    tables, origins, provenance = [], [], {}
    for tile in list_partitions(campaign.masks):
        path = partition_path(campaign.masks, tile)
        table = pq.read_table(path)
        check_arrow_schema(table.schema, MASKS, origin=str(path))
        meta = (table.schema.metadata or {}).get(PROVENANCE_KEY, b"{}")
        provenance[tile] = {str(k): str(v) for k, v in json.loads(meta).items()}
        tables.append(table.select(MASKS.column_names))
        origins.append((str(path), table.num_rows))
    if not tables:
        return pd.DataFrame(columns=[*MASKS.column_names, "origin", "row"]), provenance
    masks = pa.concat_tables(tables).to_pandas()
    masks["origin"] = np.repeat([o for o, _ in origins], [n for _, n in origins])
    masks["row"] = np.concatenate([np.arange(n) for _, n in origins])
    stray = masks[masks["project"] != project]
    if len(stray):
        first = stray.iloc[0]
        raise UserInputError(
            f"{first['origin']}: row {first['row']} belongs to project {first['project']!r}, "
            f"not {project!r}; rerun `histocurate segment --project {project} --force`"
        )
    return masks, provenance


def _single_nuclei(masks: pd.DataFrame) -> pd.DataFrame:
    """One annotator's masks as nuclei: clicks sharing one polygon are one nucleus (its
    labels the set given, its id the smallest annotation id)."""
    if masks.empty:
        return pd.DataFrame(columns=NUCLEUS_COLUMNS)
    keys = ["tile_id", "annotator", "polygon"]
    ordered = masks.sort_values("annotation_id", kind="stable")
    shared = ordered.duplicated(keys, keep=False)
    first = ordered[~ordered.duplicated(keys, keep="first")].copy()
    labels = first["label"].map(lambda v: [v])
    if shared.any():  # few: a nucleus clicked twice by the same annotator
        merged = ordered[shared].groupby(keys, sort=False)["label"].agg(lambda v: sorted(set(v)))
        lookup = {k: v for k, v in merged.items()}
        labels = pd.Series(
            [lookup.get(key, lab) for key, lab in zip(
                zip(first["tile_id"], first["annotator"], first["polygon"], strict=True),
                labels, strict=True)],
            index=first.index,
        )  # fmt: skip
    typed = labels.map(lambda v: [x for x in v if x != "unknown"])
    return pd.DataFrame(
        {
            "tile_id": first["tile_id"],
            "source": "single",
            "source_id": first["annotation_id"].astype("int64"),
            "label": [t[0] if len(t) == 1 else None for t in typed],
            "labels": [t or ["unknown"] for t in typed],
            "annotators": first["annotator"].map(lambda a: [a]),
            "n_annotators": 1,
            "polygon": first["polygon"],
            "origin": first["origin"],
            "row": first["row"].astype("int64"),
        }
    )[NUCLEUS_COLUMNS].reset_index(drop=True)


def _consensus_nuclei(frame: pd.DataFrame, origin: Path) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "tile_id": frame["tile_id"],
            "source": "consensus",
            "source_id": frame["consensus_id"].astype("int64"),
            "label": frame["label"].astype(object).where(frame["label"].notna(), None),
            "labels": frame["labels"].map(list),
            "annotators": frame["annotators"].map(list),
            "n_annotators": frame["n_annotators"].astype("int64"),
            "polygon": frame["polygon"],
            "origin": str(origin),
            "row": range(len(frame)),
        }
    )
    return out[NUCLEUS_COLUMNS]


def _changed_since_consensus(
    campaign: Campaign,
    annotated: AnnotatedTiles,
    provenance: dict[str, dict],
    multi: list[str],
    stamp: str,
) -> list[str] | None:
    """None when the consensus stamp matches the masks once the single-annotator tiles are
    taken as the consensus saw them; else the multi-annotator tiles whose clicks changed
    since (empty when what changed is not their clicks: segmenter, or unknown)."""
    from data_schema import CONSENSUS_FATES
    from histocurate.segment.plan import clicks_digest, inside

    if not campaign.consensus_fates.exists():
        return []
    fates = read_table(campaign.consensus_fates, CONSENSUS_FATES)
    fates = fates[fates["project"] == campaign.project]
    seen = {str(t): g for t, g in fates.groupby("tile_id", sort=False)}

    def then(tile: str) -> str | None:
        group = seen.get(tile)
        if group is None:
            return None
        side = annotated.side(tile) if tile in annotated else None
        return clicks_digest(group if side is None else group[inside(group, side)])

    wanted = set(multi)
    as_seen: dict[str, dict] = {}
    for tile, current in provenance.items():
        if tile in wanted:
            as_seen[tile] = current
        elif tile in seen:  # a single-annotator tile, with its clicks as consensus saw them
            as_seen[tile] = {**current, "clicks": then(tile)}
    if campaign.masks_token(as_seen) == stamp:
        return None
    return [t for t in multi if provenance.get(t, {}).get("clicks") != then(t)]


def _read_consensus(
    campaign: Campaign,
    project: str,
    masks_token: str,
    *,
    annotated: AnnotatedTiles,
    provenance: dict[str, dict],
    multi: list[str],
) -> pd.DataFrame:
    path = campaign.consensus
    rerun = f"run `histocurate consensus --project {project}`"
    if not path.exists():
        raise UserInputError(f"{path}: no consensus for campaign {project!r} yet; {rerun}")
    stamp = read_provenance(path).get("masks")
    if stamp is None:
        raise UserInputError(
            f"{path}: the consensus does not record which masks it was made from (made by an "
            f"older histocurate); {rerun} again"
        )
    if stamp != masks_token:
        changed = _changed_since_consensus(campaign, annotated, provenance, multi, stamp)
        if changed is not None:
            which = (
                f"the clicks of multi-annotator tile(s) {', '.join(changed[:5])}"
                + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                + " changed"
                if changed
                else "the masks of its multi-annotator tiles changed (clicks, segmenter or "
                "pixels), or which tiles changed is not known (no consensus_fates.parquet)"
            )
            raise UserInputError(
                f"{path}: the consensus is older than the masks it was built from ({which} "
                f"since it was made); {rerun} to refresh it"
            )
    frame = read_table(path, CONSENSUS)
    return frame[frame["project"] == project].reset_index(drop=True)


def _check_pixels(
    annotated: AnnotatedTiles,
    provenance: dict[str, dict],
    project: str,
    tiles: list[str],
    campaign: Campaign,
) -> None:
    for tile in tiles:
        drawn = provenance.get(tile, {}).get("pixels")
        if drawn is not None and tile in annotated and drawn != annotated.sha256(tile):
            raise UserInputError(
                f"{partition_path(campaign.masks, tile)}: the masks of tile {tile} were drawn "
                f"on other pixels than the image exported to {project!r}; rerun "
                f"`histocurate segment --project {project} --force`"
            )


def _cohort_of(ws: Workspace, slides: list[str]) -> tuple[dict[str, str], list[str]]:
    """Cohort of each slide (tiles table, else slides table) and slides whose file is gone."""
    cohort: dict[str, str] = {}
    gone = []
    for slide in slides:
        path = partition_path(ws.tiles, slide)
        if path.exists():
            frame = read_table(path, TILES, columns=["cohort", "slide_path"])
            if len(frame):
                cohort[slide] = str(frame["cohort"].iloc[0])
                if not Path(str(frame["slide_path"].iloc[0])).exists():
                    gone.append(slide)
    missing = [s for s in slides if s not in cohort]
    if missing and ws.slides.exists():
        manifest = read_table(ws.slides, SLIDES, columns=["slide_id", "cohort"])
        found = manifest.set_index("slide_id")["cohort"].to_dict()
        cohort.update({s: str(found[s]) for s in missing if s in found})
    return {s: cohort.get(s, "unknown") for s in slides}, gone


def _arms(ws: Workspace, indications: list[str]) -> tuple[dict[str, str], list[str]]:
    arms: dict[str, str] = {}
    encoders: set[str] = set()
    for indication in indications:
        path = partition_path(ws.selection, indication)
        if path.exists():
            frame = read_table(path, SELECTION, columns=["tile_id", "arm", "encoder"])
            arms.update(dict(zip(frame["tile_id"], frame["arm"], strict=True)))
            encoders.update(map(str, frame["encoder"].unique()))
    return arms, sorted(encoders)


def read_campaign(config: HistocurateConfig, project: str, source: str) -> CampaignInputs:
    """The inputs of a build of ``project`` with nuclei from ``source`` (consensus|masks)."""
    ws = Workspace.of(config)
    campaign = ws.campaign(project)
    annotated = AnnotatedTiles.read(ws.assignments, campaign)
    masks, mask_provenance = _read_masks(campaign, project)
    if masks.empty:
        raise UserInputError(
            f"{campaign.masks}: campaign {project!r} has no masks (nothing annotated, or not "
            f"segmented yet); run `histocurate import --project {project}` then "
            f"`histocurate segment --project {project}`"
        )
    from histocurate.dataset.checks import check_masks

    check_masks(masks, annotated, project)
    _check_pixels(annotated, mask_provenance, project, list(mask_provenance), campaign)
    n_annotators = masks.groupby("tile_id")["annotator"].nunique()
    multi = sorted(n_annotators.index[n_annotators >= 2])
    single = sorted(n_annotators.index[n_annotators == 1])
    left_out = {t: "not annotated" for t in annotated.tiles.index if t not in n_annotators.index}
    frames = []
    token = campaign_masks_token(campaign, mask_provenance)
    provenance: dict[str, object] = {
        "masks": {"path": workspace_path(campaign.masks, ws.root), "token": token}
    }
    if source == "masks":
        frames.append(_single_nuclei(masks[masks["tile_id"].isin(single)]))
    else:
        left_out.update(dict.fromkeys(single, "one annotator (no consensus)"))
    if multi:
        if source == "masks" and not campaign.consensus.exists():
            listed = ", ".join(multi[:5]) + (
                f" and {len(multi) - 5} more" if len(multi) > 5 else ""
            )
            raise UserInputError(
                f"tile(s) {listed} of campaign {project!r} were annotated by several "
                f"annotators and have no consensus; run `histocurate consensus --project "
                f"{project}` first (or build with --source consensus)"
            )
        consensus = _read_consensus(
            campaign,
            project,
            token,
            annotated=annotated,
            provenance=mask_provenance,
            multi=multi,
        )
        provenance["consensus"] = {
            "path": workspace_path(campaign.consensus, ws.root),
            "stamp": read_provenance(campaign.consensus),
        }
        from histocurate.dataset.checks import check_consensus

        check_consensus(consensus, campaign.consensus, annotated, project)
        frames.append(
            _consensus_nuclei(consensus[consensus["tile_id"].isin(multi)], campaign.consensus)
        )
    kept = sorted(single if source == "masks" else []) + multi
    if not kept:
        raise UserInputError(
            f"campaign {project!r} has no tile to build from with --source {source}: "
            + (
                "no tile has two annotators (build with --source masks)"
                if source == "consensus"
                else "no tile has masks"
            )
        )
    tiles = annotated.tiles.loc[sorted(kept)].copy()
    tiles["source"] = ["consensus" if t in set(multi) else "single" for t in tiles.index]
    cohort, gone = _cohort_of(ws, sorted(tiles["slide_id"].unique()))
    tiles["cohort"] = tiles["slide_id"].map(cohort)
    arms, encoders = _arms(ws, sorted(tiles["indication"].unique()))
    tiles["arm"] = [arms.get(t) for t in tiles.index]
    nuclei = (
        pd.concat([f for f in frames if len(f)], ignore_index=True)
        if any(len(f) for f in frames)
        else pd.DataFrame(columns=NUCLEUS_COLUMNS)
    )
    segmenters = sorted(set(masks["segmenter"].astype(str)))
    provenance.update(segmenter=segmenters, encoder=encoders)
    warnings = [
        f"slide file of {s} is gone; its tiles were built from the frozen images" for s in gone
    ]
    return CampaignInputs(
        project, campaign, annotated, tiles, nuclei, provenance, left_out, warnings
    )
