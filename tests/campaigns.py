"""Build small campaigns for tests: exported tiles (frozen images + assignments), clicks.

What `histocurate export` and `import` leave in a workspace, written directly, so that the
annotation-side stages (segment, consensus, datasets) can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_schema import ASSIGNMENTS, POINTS, TILES
from histocurate.io import partition_path, provenance_token, read_provenance, write_table
from histocurate.io.tables import read_table
from histocurate.workspace import Workspace


def export_tiles(
    root: Path,
    project: str,
    images: dict[str, np.ndarray],
    *,
    annotators: Sequence[str],
    slide_id: str = "s1",
    indication: str = "LUAD",
    mpp: float = 0.25,
) -> pd.DataFrame:
    """Freeze ``images`` (tile id -> RGB) as exported to ``project`` and record the
    assignments (every annotator on every tile; rows of other tiles are kept, as a re-run of
    export adds tiles). The tiles' slide may have a partition in the tiles table: its token
    is recorded as export does."""
    ws = Workspace(root)
    campaign = ws.campaign(project)
    tiles_file = partition_path(ws.tiles, slide_id)
    token = provenance_token(read_provenance(tiles_file)) if tiles_file.exists() else "none"
    rows = []
    for k, (tile_id, rgb) in enumerate(images.items()):
        _, sha = campaign.freeze_image(tile_id, rgb, mpp=mpp)
        for annotator in annotators:
            rows.append(
                {
                    "project": project,
                    "project_id": 1,
                    "tile_id": tile_id,
                    "slide_id": slide_id,
                    "indication": indication,
                    "image_id": 100 + k,
                    "annotator": annotator,
                    "k": len(annotators),
                    "tile_mpp": mpp,
                    "tile_px": rgb.shape[0],
                    "image_sha256": sha,
                    "tiles_token": token,
                }
            )
    frame = pd.DataFrame(rows, columns=ASSIGNMENTS.column_names)
    if ws.assignments.exists():
        old = read_table(ws.assignments, ASSIGNMENTS)
        same = (old["project"] == project) & old["tile_id"].isin(set(images))
        frame = pd.concat([old[~same], frame], ignore_index=True)
    write_table(frame, ws.assignments, ASSIGNMENTS)
    return frame


def write_points(root: Path, project: str, clicks: pd.DataFrame) -> pd.DataFrame:
    """Clicks (annotation_id, tile_id, annotator, x, y[, label]) as imported into
    ``project``; other projects' clicks are kept."""
    ws = Workspace(root)
    points = clicks.copy()
    points["project"] = project
    if "label" not in points:
        points["label"] = "lymphocyte"
    points["term_ids"] = [[1]] * len(points)
    points["image_id"] = 100
    points["labelled_by"] = points["annotator"]
    points["reviewed"] = False
    points["assigned"] = True
    points["shape"] = "point"
    points["updated_at"] = pd.Timestamp("2026-01-01", tz="UTC")
    points = points[POINTS.column_names]
    if ws.points.exists():
        old = read_table(ws.points, POINTS)
        points = pd.concat([old[old["project"] != project], points], ignore_index=True)
    write_table(points, ws.points, POINTS)
    return points


def tiles_rows(slide_path: Path, tile_ids: Sequence[str], *, size: int) -> pd.DataFrame:
    """Rows of the tiles table for tiles of one slide side by side along x."""
    return pd.DataFrame(
        {
            "tile_id": list(tile_ids),
            "slide_id": "s1",
            "indication": "LUAD",
            "cohort": "c",
            "slide_path": str(slide_path),
            "x": [k * size for k in range(len(tile_ids))],
            "y": 0,
            "size_level0": size,
            "mpp": 0.25,
            "tile_mpp": 0.25,
            "tile_px": size,
            "read_level": 0,
            "read_size": size,
            "resized": False,
            "tissue_fraction": 1.0,
        },
        columns=TILES.column_names,
    )


def write_masks(root: Path, project: str, masks: pd.DataFrame, *, segmenter: str = "x") -> None:
    """Masks rows (annotation_id, tile_id, annotator, x, y, label, polygon, segmenter) as the
    segment stage writes them: one partition per tile, provenance from the current clicks
    and exported pixels (so consensus takes them as up to date)."""
    from data_schema import MASKS
    from histocurate.campaign import AnnotatedTiles, read_points
    from histocurate.io import write_partition
    from histocurate.segment.plan import masks_provenance

    ws = Workspace(root)
    campaign = ws.campaign(project)
    annotated = AnnotatedTiles.read(ws.assignments, campaign)
    points = read_points(ws.points, project)
    rows = masks.assign(project=project)
    if "area" not in rows:
        import shapely

        rows["area"] = shapely.area(shapely.from_wkb(rows["polygon"].to_numpy()))
    if "fallback" not in rows:
        rows["fallback"] = False
    for tile_id, group in rows.groupby("tile_id"):
        clicks = points[points["tile_id"] == tile_id]
        provenance = masks_provenance(annotated, str(tile_id), clicks, segmenter)
        write_partition(
            group[MASKS.column_names], campaign.masks, str(tile_id), MASKS, provenance=provenance
        )


def campaign_from_masks(
    root: Path, project: str, masks: pd.DataFrame, *, side: int = 160, grey: int = 200
) -> None:
    """A whole campaign from a masks frame: flat grey exported images, assignments of the
    annotators who clicked each tile, the clicks, and the masks."""
    images = {str(t): np.full((side, side, 3), grey, np.uint8) for t in masks["tile_id"].unique()}
    export_tiles(root, project, images, annotators=sorted(masks["annotator"].unique()))
    write_points(root, project, masks[["annotation_id", "tile_id", "annotator", "x", "y", "label"]])
    write_masks(root, project, masks)
