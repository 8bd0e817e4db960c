"""A campaign: one Cytomine project's annotation work, kept together in the workspace.

Every annotation-side table carries its campaign (``project``), and a campaign's files live
in one folder, ``campaigns/<project>/``::

    images/<tile_id>.png      the tile images exactly as uploaded to Cytomine (frozen pixels)
    masks.parquet/            one file per tile (segment)
    consensus.parquet         consensus nuclei (consensus)
    consensus_fates.parquet   what became of every click (consensus)
    exports/qupath/           one GeoJSON per tile (consensus)
    reports/<stage>/          overlays, summaries, agreement report

The pixels the pathologists saw are frozen at export: `freeze_image` writes the PNG that
is uploaded, and the assignments table records its sha256 and the token of the tiles it
was cut from. Segment, consensus and the dataset build read those pixels with
`AnnotatedTiles.pixels`, never the slide again; a missing or altered image is an error
naming the file and what to do. Points themselves stay in one table (``points.parquet``,
with a ``project`` column) that the import rewrites one project at a time.

>>> folder_name("luad-2026")
'luad-2026'
>>> folder_name("LUAD 2026 / round 2")
'LUAD_2026_round_2-0c57ebdb'
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_schema import ASSIGNMENTS, POINTS
from histocurate.digest import sha256_hex, short_digest
from histocurate.errors import UserInputError, WorkspaceError
from histocurate.io import atomic_write_bytes, read_table

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def folder_name(project: str) -> str:
    """The folder of a project: its name when that is a safe file name, else the name with
    unsafe characters replaced and a short digest of the real name (no two projects share a
    folder)."""
    if not project.strip():
        raise UserInputError("a campaign needs a non-empty project name")
    if _SAFE.match(project):
        return project
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", project).strip("_.-") or "project"
    return f"{cleaned}-{short_digest(project, 8)}"


def png_bytes(rgb: np.ndarray, *, mpp: float) -> bytes:
    """An RGB tile as PNG bytes whose pHYs chunk records the resolution (``mpp`` um/px).

    Deterministic: the same pixels give the same bytes (and sha256).
    """
    from PIL import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (h, w, 3) array, got {rgb.dtype} {rgb.shape}")
    dpi = 25400.0 / mpp
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", dpi=(dpi, dpi))
    return buffer.getvalue()


def sha256_of(data: bytes) -> str:
    return sha256_hex(data)


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@dataclass(frozen=True, slots=True)
class Campaign:
    """The folder of one campaign in a workspace, with one property per file."""

    workspace_root: Path
    project: str

    @property
    def root(self) -> Path:
        return self.workspace_root / "campaigns" / folder_name(self.project)

    @property
    def images(self) -> Path:
        """The tile images as uploaded (``<tile_id>.png``)."""
        return self.root / "images"

    def image_path(self, tile_id: str) -> Path:
        from histocurate.io.tables import check_partition_key

        return self.images / f"{check_partition_key(tile_id)}.png"

    @property
    def masks(self) -> Path:
        """Nucleus mask of every click (table ``masks``, one file per tile)."""
        return self.root / "masks.parquet"

    @property
    def consensus(self) -> Path:
        """Consensus nuclei (table ``consensus``)."""
        return self.root / "consensus.parquet"

    @property
    def consensus_fates(self) -> Path:
        """What became of every click (table ``consensus_fates``)."""
        return self.root / "consensus_fates.parquet"

    @property
    def qupath(self) -> Path:
        """QuPath GeoJSON, one ``<tile_id>.geojson`` per tile."""
        return self.root / "exports" / "qupath"

    def reports(self, stage: str) -> Path:
        """Reports and pictures of one stage of this campaign."""
        return self.root / "reports" / stage

    def masks_token(self, provenance: dict[str, dict[str, str]] | None = None) -> str:
        """Token of the campaign's masks as they are now: a digest of every masks
        partition's provenance token, by tile (``provenance``: those already read). The
        consensus records it as ``{"masks": token}``; the dataset build compares."""
        from histocurate.digest import json_digest
        from histocurate.io import (
            list_partitions,
            partition_path,
            provenance_token,
            read_provenance,
        )

        if provenance is None:
            provenance = {
                tile: read_provenance(partition_path(self.masks, tile))
                for tile in list_partitions(self.masks)
            }
        return json_digest({tile: provenance_token(p) for tile, p in provenance.items()})

    def freeze_image(self, tile_id: str, rgb: np.ndarray, *, mpp: float) -> tuple[Path, str]:
        """Keep the PNG of a tile as it is uploaded; returns (path, sha256 of the file)."""
        data = png_bytes(rgb, mpp=mpp)
        path = self.image_path(tile_id)
        atomic_write_bytes(path, data)
        return path, sha256_of(data)


def exported_tiles(assignments: pd.DataFrame) -> pd.DataFrame:
    """One row per exported tile of the assignments rows (indexed by tile_id)."""
    columns = [
        "project",
        "tile_id",
        "slide_id",
        "indication",
        "tile_mpp",
        "tile_px",
        "image_sha256",
        "tiles_token",
    ]
    tiles = assignments[columns].drop_duplicates("tile_id")
    return tiles.set_index("tile_id", drop=False).sort_index()


@dataclass
class AnnotatedTiles:
    """The tiles of one campaign as exported: where their pixels are and what they were.

    Read from the assignments table only (not the cohort's tiles table, which may hold
    millions of rows): one row per tile with slide_id, indication, tile_mpp, tile_px,
    image_sha256 and tiles_token.
    """

    campaign: Campaign
    tiles: pd.DataFrame

    @classmethod
    def read(cls, assignments_path: Path, campaign: Campaign) -> AnnotatedTiles:
        if not assignments_path.exists():
            raise WorkspaceError(
                f"{assignments_path}: no campaign has been exported from this workspace; run "
                f"`histocurate export --project {campaign.project}` first"
            )
        table = read_table(assignments_path, ASSIGNMENTS)
        mine = table[table["project"] == campaign.project]
        if mine.empty:
            known = sorted(table["project"].unique())
            raise UserInputError(
                f"no tile of project {campaign.project!r} in {assignments_path} (projects "
                f"there: {', '.join(known) or 'none'}); run `histocurate export --project "
                f"{campaign.project}` or pick one of those"
            )
        return cls(campaign, exported_tiles(mine))

    def __contains__(self, tile_id: object) -> bool:
        return tile_id in self.tiles.index

    def mpp(self, tile_id: str) -> float:
        return float(self.tiles["tile_mpp"].loc[tile_id])

    def side(self, tile_id: str) -> int:
        return int(self.tiles["tile_px"].loc[tile_id])

    def sha256(self, tile_id: str) -> str:
        return str(self.tiles.at[tile_id, "image_sha256"])

    def pixels(self, tile_id: str) -> np.ndarray:
        """The RGB pixels of a tile as the pathologists saw them (checked by sha256)."""
        path = self.campaign.image_path(tile_id)
        fix = (
            f"run `histocurate export --project {self.campaign.project}` again: it re-freezes "
            "the images of tiles whose slide is unchanged (a slide re-scanned since cannot give "
            "the annotated pixels back; restore the image file from a backup)"
        )
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserInputError(
                f"{path}: the image of tile {tile_id} exported to {self.campaign.project!r} is "
                f"missing; {fix}"
            ) from None
        if sha256_of(data) != self.sha256(tile_id):
            raise UserInputError(
                f"{path}: this is not the image exported for tile {tile_id} (sha256 differs "
                f"from the assignments'); {fix}"
            )
        return decode_png(data)


def check_unchanged_slides(
    tiles_root: Path, annotated: AnnotatedTiles, tile_ids: Iterable[str] | None = None
) -> list[str]:
    """Slides whose tiles changed since their tiles were exported (re-scanned, retiled).

    The campaign's pixels are frozen, so its masks and consensus stay consistent; but the
    slide now holds other pixels under the same tile ids, and anything made from the slide
    (features, a new export, predictions) no longer matches what was annotated.
    """
    from histocurate.io import partition_path, provenance_token, read_provenance

    rows = annotated.tiles if tile_ids is None else annotated.tiles.loc[list(tile_ids)]
    changed = []
    for slide_id, group in rows.groupby("slide_id", sort=True):
        path = partition_path(tiles_root, str(slide_id))
        if not path.exists():
            continue  # tiles deleted: nothing was retiled from another scan
        token = provenance_token(read_provenance(path))
        if set(group["tiles_token"]) != {token}:
            changed.append(str(slide_id))
    return changed


def projects_with_points(points_path: Path) -> list[str]:
    """Projects that have imported points (sorted)."""
    if not points_path.exists():
        return []
    return sorted(read_table(points_path, POINTS, columns=["project"])["project"].unique())


def read_points(points_path: Path, project: str) -> pd.DataFrame:
    """The imported clicks of one project (only that project's rows are read)."""
    import pyarrow.parquet as pq

    from histocurate.io.tables import check_arrow_schema

    if not points_path.exists():
        raise WorkspaceError(
            f"{points_path}: no clicks imported yet; run `histocurate import --project "
            f"{project}` first"
        )
    check_arrow_schema(pq.read_schema(points_path), POINTS, origin=str(points_path))
    table = pq.read_table(points_path, filters=[("project", "=", project)])
    return table.to_pandas()


def resolve_project(project: str | None, *, configured: str | None, points_path: Path) -> str:
    """The campaign a command works on: ``--project``, else ``[cytomine] project``, else the
    only project with imported points; several and none given is an error listing them."""
    if project:
        return project
    if configured:
        return configured
    found = projects_with_points(points_path)
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserInputError(
            f"no campaign given and no clicks imported yet ({points_path}); pass --project "
            "(or set [cytomine] project) after `histocurate import --project NAME`"
        )
    raise UserInputError(
        f"several campaigns have clicks ({', '.join(found)}): pass --project NAME (or set "
        "[cytomine] project)"
    )
