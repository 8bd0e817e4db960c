"""Tile one slide, or a cohort slide by slide (resumable: a slide whose table exists is done).

"Done" means a partition made from the same slide file (fingerprint), manifest row and
tiling settings, all recorded in the partition's provenance; a slide re-scanned under the
same id, a changed manifest row or new settings retile that slide.

Used as is by the CLI (`histocurate tile`) and, one task per slide, by `flows/tile.py`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from data_schema import SLIDES, TILES
from histocurate.config import HistocurateConfig, TilingConfig
from histocurate.errors import SlideError, UserInputError
from histocurate.io import (
    atomic_path,
    list_partitions,
    partition_path,
    read_provenance,
    read_table,
    write_partition,
    write_table,
)
from histocurate.manifest import read_manifest
from histocurate.slides.fingerprint import file_fingerprint
from histocurate.slides.reader import open_slide, slide_mpp
from histocurate.tiling.grid import grid_positions, tile_geometry, tissue_fractions
from histocurate.tiling.tissue import tissue_mask
from histocurate.workspace import Workspace

Status = Literal["tiled", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class SlideOutcome:
    """What happened to one slide; the run report is a list of these."""

    slide_id: str
    status: Status
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    input_error: bool = False  # True: the slide or manifest is at fault (exit code 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.slide_id}: {self.error}" if self.error else f"{self.slide_id}: {self.status}"


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A low-resolution RGB view of the whole slide and its tissue mask."""

    rgb: np.ndarray
    mask: np.ndarray
    scale_x: float  # thumbnail pixels per level-0 pixel
    scale_y: float


def read_thumbnail(slide: Any, *, mpp: float, thumbnail_mpp: float) -> np.ndarray:
    """The whole slide at about ``thumbnail_mpp``, from the best pyramid level, on white."""
    width, height = slide.dimensions
    downsample = max(thumbnail_mpp / mpp, 1.0)
    level = slide.get_best_level_for_downsample(downsample)
    region = slide.read_region((0, 0), level, slide.level_dimensions[level])
    size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
    if region.size != size:
        region = region.resize(size, Image.Resampling.BOX)
    white = Image.new("RGBA", region.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, region).convert("RGB"))


def tile_slide(
    slide_row: Mapping[str, Any], config: TilingConfig
) -> tuple[pd.DataFrame, Thumbnail]:
    """Tiles of one slide on tissue (rows of the ``tiles`` table) and its thumbnail.

    ``slide_row`` is a row of the ``slides`` table. Raises `SlideError` when the slide cannot
    be read, has no resolution, or is smaller than one tile.
    """
    path = Path(slide_row["path"])
    override = slide_row.get("mpp_override")
    override = None if override is None or pd.isna(override) else float(override)
    slide = open_slide(path)
    try:
        mpp = slide_mpp(slide, path, override)
        width, height = slide.dimensions
        geometry = tile_geometry(
            mpp=mpp,
            tile_size_um=config.tile_size_um,
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            target_mpp=config.target_mpp,
        )
        if geometry.size_level0 > min(width, height):
            raise SlideError(
                f"{path}: the slide ({width} x {height} px at {mpp:.3f} um/px) is smaller than "
                f"one tile ({config.tile_size_um} um = {geometry.size_level0} px); lower "
                "[tiling] tile_size_um or drop the slide"
            )
        try:
            rgb = read_thumbnail(slide, mpp=mpp, thumbnail_mpp=config.thumbnail_mpp)
        except Exception as exc:  # OpenSlide reports damaged tiles only when read
            raise SlideError(f"{path}: cannot read the slide's pixels ({exc})") from None
    finally:
        slide.close()

    thumb_mpp = mpp * width / rgb.shape[1]
    mask = tissue_mask(rgb, mpp=thumb_mpp)
    thumbnail = Thumbnail(rgb, mask, rgb.shape[1] / width, rgb.shape[0] / height)
    xs, ys = grid_positions(width, height, geometry.size_level0)
    fractions = tissue_fractions(
        mask,
        scale_x=thumbnail.scale_x,
        scale_y=thumbnail.scale_y,
        x=xs,
        y=ys,
        size=geometry.size_level0,
    )
    keep = fractions >= config.tissue_threshold
    slide_id = str(slide_row["slide_id"])
    tiles = pd.DataFrame(
        {
            "tile_id": [f"{slide_id}_x{x}_y{y}" for x, y in zip(xs[keep], ys[keep], strict=True)],
            "slide_id": slide_id,
            "indication": str(slide_row["indication"]),
            "cohort": str(slide_row["cohort"]),
            "slide_path": str(path),
            "x": xs[keep],
            "y": ys[keep],
            "size_level0": geometry.size_level0,
            "mpp": mpp,
            "tile_mpp": geometry.tile_mpp,
            "tile_px": geometry.tile_px,
            "read_level": geometry.read_level,
            "read_size": geometry.read_size,
            "resized": geometry.resized,
            "tissue_fraction": fractions[keep].astype(np.float64),
        }
    )
    return tiles, thumbnail


OVERLAY_SIDE = 1024  # long side of the review picture, px


def render_tiling_overlay(
    slide_path: Path, thumbnail: Thumbnail, tiles: pd.DataFrame, out: Path
) -> Path:
    """Save a ~1024 px view of the slide, glass shaded blue and kept tiles boxed in green.

    The detection thumbnail (8 um/px) is too small to review, so a larger view is read
    from the pyramid; the mask is scaled up onto it.
    """
    slide = open_slide(slide_path)
    try:
        base = slide.get_thumbnail((OVERLAY_SIDE, OVERLAY_SIDE)).convert("RGBA")
        width, height = slide.dimensions
    finally:
        slide.close()
    scale_x, scale_y = base.width / width, base.height / height
    glass = Image.fromarray(np.where(thumbnail.mask, 0, 255).astype(np.uint8))
    glass = glass.resize(base.size, Image.Resampling.NEAREST)
    shade = Image.new("RGBA", base.size, (0, 0, 80, 90))
    image = Image.composite(Image.alpha_composite(base, shade), base, glass)
    draw = ImageDraw.Draw(image)
    for x, y, size in tiles[["x", "y", "size_level0"]].itertuples(index=False):
        box = (x * scale_x, y * scale_y, (x + size) * scale_x - 1, (y + size) * scale_y - 1)
        draw.rectangle(box, outline=(0, 170, 0, 255), width=2 if size * scale_x > 12 else 1)
    with atomic_path(out) as tmp:
        image.convert("RGB").save(tmp, format="PNG")
    return out


def prepare_slides(config: HistocurateConfig) -> list[dict[str, Any]]:
    """Validate the manifest and store it as the ``slides`` table; return its rows."""
    slides = read_manifest(
        config.resolve(config.cohort.manifest),
        indications=config.cohort.indications,
        default_cohort=config.cohort.name,
    )
    write_table(slides, Workspace.of(config).slides, SLIDES)
    return [{str(k): v for k, v in row.items()} for row in slides.to_dict(orient="records")]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tiling_provenance(slide_row: Mapping[str, Any], config: TilingConfig) -> dict[str, str]:
    """What a slide's tiles are made from: the slide file's content, its manifest row, the
    settings. Not where the file is: slides moved to another mount (a worker that sees the
    storage elsewhere, a workspace copied) are the same slides, and their tiles (and the
    features made from them) stay valid; only the tiles' ``slide_path`` is updated.

    Raises OSError when the slide file cannot be read.
    """
    row = {
        k: "" if pd.isna(value := slide_row.get(k)) else str(value)  # None and NaN alike
        for k in ("indication", "cohort", "mpp_override")
    }
    return {
        "slide": file_fingerprint(slide_row["path"]),
        "manifest_row": _digest(repr(sorted(row.items()))),
        "tiling": _digest(config.model_dump_json()),
    }


def _follow_moved_slide(
    workspace: Workspace, slide_id: str, path: str, provenance: dict[str, str]
) -> None:
    """Point a slide's tiles at its file's current path (same content, moved or mounted
    elsewhere): the tiles and their provenance are kept, so features stay valid."""
    where = partition_path(workspace.tiles, slide_id)
    paths = read_table(where, TILES, columns=["slide_path"])["slide_path"]
    if len(paths) and (paths != path).any():
        tiles = read_table(where, TILES).assign(slide_path=path)
        write_partition(tiles, workspace.tiles, slide_id, TILES, provenance=provenance)


def tile_one_slide(
    slide_row: Mapping[str, Any], config: HistocurateConfig, *, force: bool = False
) -> SlideOutcome:
    """Tile one slide into its partition of ``tiles.parquet`` unless it is already there
    and made from the same slide file, manifest row and settings.

    Never raises for a bad slide: the failure is the outcome, so other slides go on, and a
    partition written earlier for the slide is left as it was. A slide whose file is gone
    or unreadable keeps its existing partition (skipped), as before it went missing.
    """
    workspace = Workspace.of(config)
    slide_id = str(slide_row["slide_id"])
    try:
        provenance: dict[str, str] | None = tiling_provenance(slide_row, config.tiling)
    except OSError:
        provenance = None  # tile_slide below names the problem if the slide is tiled
    if not force and slide_id in list_partitions(workspace.tiles):
        stored = read_provenance(partition_path(workspace.tiles, slide_id))
        if provenance is None:
            return SlideOutcome(slide_id, "skipped")
        if stored == provenance:
            _follow_moved_slide(workspace, slide_id, str(slide_row["path"]), provenance)
            return SlideOutcome(slide_id, "skipped")
    start = time.perf_counter()
    try:
        tiles, thumbnail = tile_slide(slide_row, config.tiling)
        write_partition(tiles, workspace.tiles, slide_id, TILES, provenance=provenance)
        overlay = workspace.reports / "tile" / f"{slide_id}.png"
        render_tiling_overlay(Path(slide_row["path"]), thumbnail, tiles, overlay)
    except UserInputError as exc:
        return SlideOutcome(slide_id, "failed", error=str(exc), input_error=True)
    except Exception as exc:  # a bug or an unexpected library error: report, keep going
        return SlideOutcome(slide_id, "failed", error=f"{type(exc).__name__}: {exc}")
    return SlideOutcome(slide_id, "tiled", len(tiles), time.perf_counter() - start)


def tiles_path(config: HistocurateConfig, slide_id: str) -> Path:
    """Where the tiles of ``slide_id`` are stored."""
    return partition_path(Workspace.of(config).tiles, slide_id)
