"""Tiny campaigns written straight into a workspace, for the dataset tests and benchmarks.

Writes what the export, segment and consensus stages would have left: the tiles table of the
slides, the frozen images, the assignments, one masks partition per tile (with provenance),
the consensus (stamped with the masks token) with its fates (what became of every click)
and the selection. Nuclei are the synthetic cohort's outlines (`histocurate.synth.morphology`:
realistic shapes per type), placed on a jittered grid, with labels chosen by the caller;
images are drawn from them (pink stroma, purple nuclei, noise). Annotators see the same
outlines, shifted by up to a pixel each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from data_schema import ASSIGNMENTS, CONSENSUS, CONSENSUS_FATES, MASKS, SELECTION, TILES
from histocurate.campaign import png_bytes, sha256_of
from histocurate.config import load_config
from histocurate.dataset.inputs import campaign_masks_token
from histocurate.geometry import rasterize
from histocurate.io import atomic_write_bytes, write_partition, write_table
from histocurate.labels import LABELS
from histocurate.runs import Mapper
from histocurate.synth.morphology import make_cells
from histocurate.synth.truth import cell_polygons
from histocurate.workspace import Workspace, init_workspace


@dataclass
class SyntheticTile:
    """One tile to write: who annotated it and what its nuclei are (labels, or random)."""

    tile_id: str
    slide_id: str
    indication: str = "LUAD"
    annotators: tuple[str, ...] = ("ann1",)
    side: int = 128
    mpp: float = 0.25
    labels: Sequence[str] | None = None  # one per grid cell used; None: random types
    disagree: int = 0  # nuclei on which the annotators give different labels
    unknown: int = 0  # nuclei every annotator calls 'unknown'
    seed: int = 0
    cohort: str = "synthetic"
    spacing: float = 40.0  # grid spacing at 0.25 um/px, px


@dataclass
class SyntheticCampaign:
    """What was written: the truth nuclei of each tile (tile pixels, shapely)."""

    workspace: Path
    project: str
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)


def synthetic_nuclei(tile: SyntheticTile) -> pd.DataFrame:
    """Truth nuclei of a tile: label and polygon (shapely, tile pixels)."""
    rng = np.random.default_rng(tile.seed)
    spacing = tile.spacing * 0.25 / tile.mpp
    n = max(1, int(tile.side // spacing))
    centres = (np.arange(n) + 0.5) * (tile.side / n)
    cx, cy = (a.ravel() for a in np.meshgrid(centres, centres))
    count = len(tile.labels) if tile.labels is not None else len(cx)
    cx, cy = cx[:count] + rng.uniform(-3, 3, count), cy[:count] + rng.uniform(-3, 3, count)
    labels = (
        list(tile.labels)
        if tile.labels is not None
        else list(rng.choice(np.asarray(LABELS), size=count))
    )
    polygons = np.empty(count, dtype=object)
    for label in sorted(set(labels)):
        idx = np.array([k for k, v in enumerate(labels) if v == label])
        cells = make_cells(
            rng, label, cx[idx], cy[idx], rng.uniform(0, np.pi, len(idx)), mpp=tile.mpp
        )
        polygons[idx] = cell_polygons(cells)
    return pd.DataFrame({"label": labels, "polygon": list(polygons)})


def render(tile: SyntheticTile, polygons: Sequence[object]) -> np.ndarray:
    """An H&E-like RGB image of the nuclei (uint8)."""
    rng = np.random.default_rng(tile.seed + 1)
    inst = rasterize(list(polygons), shape=(tile.side, tile.side)) if len(polygons) else None
    image = np.empty((tile.side, tile.side, 3), dtype=np.float32)
    image[:] = (235, 170, 205)
    if inst is not None:
        image[inst > 0] = (95, 50, 140)
    image += rng.standard_normal(image.shape, dtype=np.float32) * 12
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def tile_payload(tile: SyntheticTile) -> tuple[pd.DataFrame, bytes]:
    """A tile's truth nuclei and the PNG of its image (the costly part: run it in a pool)."""
    truth = synthetic_nuclei(tile)
    return truth, png_bytes(render(tile, list(truth["polygon"])), mpp=tile.mpp)


def _consensus_rows(project: str, tile: SyntheticTile, masks: pd.DataFrame) -> list[dict]:
    rows = []
    for _, group in masks.groupby("nucleus", sort=True):
        given = list(group["label"])
        typed = sorted({g for g in given if g != "unknown"})
        votes = pd.Series([g for g in given if g != "unknown"]).value_counts()
        majority = str(votes.index[0]) if len(votes) and votes.iloc[0] * 2 > len(given) else None
        first = group.iloc[0]
        rows.append(
            dict(
                project=project,
                consensus_id=int(group["annotation_id"].min()),
                tile_id=tile.tile_id,
                x=float(group["x"].mean()),
                y=float(group["y"].mean()),
                label=majority,
                labels=typed or ["unknown"],
                label_majority=majority,
                label_dawid_skene=None,
                dawid_skene_probability=None,
                label_rule="majority",
                annotators=sorted(group["annotator"]),
                members=list(group["annotation_id"]),
                member_labels=given,
                n_annotators=len(group),
                mean_iou=0.9,
                polygon=first["polygon"],
                polygon_source="member",
                segmenter="watershed",
                area=float(first["area"]),
            )
        )
    return rows


def write_campaign(
    workspace: Path,
    tiles: Sequence[SyntheticTile],
    *,
    project: str = "camp",
    consensus: bool = True,
    selection: bool = True,
    mapper: Mapper = map,
) -> SyntheticCampaign:
    """Write a campaign of ``tiles`` into ``workspace`` (created when needed); ``mapper``
    runs `tile_payload` (a process pool's ``map`` for large campaigns)."""
    workspace = Path(workspace)
    if not (workspace / "histocurate.toml").exists():
        init_workspace(workspace, load_config(workspace, environ={}, require_file=False))
    ws = Workspace(workspace.resolve())
    campaign = ws.campaign(project)
    out = SyntheticCampaign(ws.root, project)
    from histocurate.segment.plan import clicks_digest, inside

    assignments, consensus_rows, selected = [], [], []
    fates: list[pd.DataFrame] = []
    next_id = 1
    for slide_id in sorted({t.slide_id for t in tiles}):
        mine = [t for t in tiles if t.slide_id == slide_id]
        slide_path = ws.root / "slides" / f"{slide_id}.tiff"
        slide_path.parent.mkdir(parents=True, exist_ok=True)
        slide_path.write_bytes(b"synthetic")
        rows = [
            dict(
                tile_id=t.tile_id,
                slide_id=slide_id,
                indication=t.indication,
                cohort=t.cohort,
                slide_path=str(slide_path),
                x=k * t.side,
                y=0,
                size_level0=t.side,
                mpp=t.mpp,
                tile_mpp=t.mpp,
                tile_px=t.side,
                read_level=0,
                read_size=t.side,
                resized=False,
                tissue_fraction=1.0,
            )
            for k, t in enumerate(mine)
        ]
        write_partition(pd.DataFrame(rows), ws.tiles, slide_id, TILES)
    for tile, (truth, image) in zip(tiles, mapper(tile_payload, tiles), strict=True):
        out.truth[tile.tile_id] = truth
        atomic_write_bytes(campaign.image_path(tile.tile_id), image)
        sha = sha256_of(image)
        masks = []
        for a, annotator in enumerate(tile.annotators):
            shift = np.random.default_rng(tile.seed + 7 + a).uniform(-0.5, 0.5, 2) if a else (0, 0)
            for k, (label, polygon) in enumerate(
                zip(truth["label"], truth["polygon"], strict=True)
            ):
                if k < tile.unknown:
                    label = "unknown"
                elif k < tile.unknown + tile.disagree and a:
                    label = LABELS[(LABELS.index(label) + a) % len(LABELS)]
                moved = shapely.affinity.translate(polygon, *shift)
                centre = moved.centroid
                masks.append(
                    dict(
                        project=project,
                        annotation_id=next_id,
                        tile_id=tile.tile_id,
                        annotator=annotator,
                        x=centre.x,
                        y=centre.y,
                        label=label,
                        polygon=shapely.to_wkb(moved),
                        segmenter="watershed",
                        area=moved.area,
                        fallback=False,
                        nucleus=k,
                    )
                )
                next_id += 1
            assignments.append(
                dict(
                    project=project,
                    project_id=1,
                    tile_id=tile.tile_id,
                    slide_id=tile.slide_id,
                    indication=tile.indication,
                    image_id=next_id,
                    annotator=annotator,
                    k=len(tile.annotators),
                    tile_mpp=tile.mpp,
                    tile_px=tile.side,
                    image_sha256=sha,
                    tiles_token="synthetic",
                )
            )
        frame = pd.DataFrame(masks)
        if len(frame):
            write_partition(
                frame[MASKS.column_names],
                campaign.masks,
                tile.tile_id,
                MASKS,
                provenance={
                    "pixels": sha,
                    "clicks": clicks_digest(frame[inside(frame, tile.side)]),
                    "segmenter": "watershed",
                },
            )
            fate = frame[["project", "annotation_id", "tile_id", "annotator", "x", "y", "label"]]
            if len(tile.annotators) >= 2:
                consensus_rows += _consensus_rows(project, tile, frame)
                first = frame.groupby("nucleus")["annotation_id"].transform("min")
                fate = fate.assign(consensus_id=first.astype("Int64"), status="kept")
            else:
                fate = fate.assign(consensus_id=None, status="single_annotator_tile")
            fates.append(fate)
        selected.append(
            dict(
                tile_id=tile.tile_id,
                slide_id=tile.slide_id,
                indication=tile.indication,
                arm="diversity",
                encoder="builtin",
            )
        )
    write_table(pd.DataFrame(assignments), ws.assignments, ASSIGNMENTS)
    if consensus:
        frame = pd.DataFrame(consensus_rows, columns=CONSENSUS.column_names)
        data = frame if len(frame) else CONSENSUS.to_arrow().empty_table()
        write_table(
            data,
            campaign.consensus,
            CONSENSUS,
            provenance={"masks": campaign_masks_token(campaign)},
        )
        columns = CONSENSUS_FATES.column_names
        fate_frame = pd.concat(fates, ignore_index=True) if fates else pd.DataFrame()
        write_table(
            fate_frame[columns].astype({"consensus_id": "Int64"})
            if len(fate_frame)
            else CONSENSUS_FATES.to_arrow().empty_table(),
            campaign.consensus_fates,
            CONSENSUS_FATES,
        )
    if selection:
        frame = pd.DataFrame(selected)
        for column in SELECTION.column_names:
            if column not in frame:
                frame[column] = None
        for indication, part in frame.groupby("indication"):
            write_partition(part[SELECTION.column_names], ws.selection, str(indication), SELECTION)
    return out
