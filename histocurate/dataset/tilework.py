"""One tile of a dataset: its image, its maps and its nuclei rows, from a campaign's frozen
image and polygons (`campaign_tile`) or from an imported image and instance map
(`imported_tile`). Both give a `TileResult`; `write_part` stores a batch of them in the
staging folder, and `histocurate.dataset.assemble` joins the parts into the tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray

from histocurate.campaign import png_bytes, sha256_of
from histocurate.dataset.classes import IGNORE_TYPE, class_index
from histocurate.dataset.maps import (
    TileMaps,
    clip_to_tile,
    decode_rgb,
    encode_map,
    encode_rgb,
    image_size,
    instance_stats,
    map_polygons,
    rasterise_nuclei,
    resample_image,
    resample_map,
    scale_geoms,
)
from histocurate.errors import UserInputError

MPP_TOLERANCE = 0.01  # relative: a tile within 1% of the dataset's mpp is not resampled


def target_side(side: int, source_mpp: float, mpp: float) -> int:
    """Side of a tile at the dataset's resolution (unchanged within `MPP_TOLERANCE`)."""
    if abs(source_mpp / mpp - 1.0) <= MPP_TOLERANCE:
        return side
    return max(1, round(side * source_mpp / mpp))


@dataclass
class TileResult:
    """A tile row (`DATASET_TILES` columns), its nuclei rows and what happened."""

    row: dict[str, Any]
    nuclei: pd.DataFrame
    contested_pixels: int = 0
    vanished: list[dict[str, Any]] = field(default_factory=list)


def type_values(labels: pd.Series) -> NDArray[np.int64]:
    """Type-map value of each nucleus: its class index, `IGNORE_TYPE` when undetermined."""
    return np.array(
        [class_index(v) if isinstance(v, str) else IGNORE_TYPE for v in labels], dtype=np.int64
    )


def _nuclei_frame(
    tile_id: str,
    maps: TileMaps,
    polygons: NDArray[np.object_],
    attrs: pd.DataFrame,
    clipped: NDArray[np.bool_],
) -> pd.DataFrame:
    stats = instance_stats(maps.inst, len(maps.kept))
    kept = attrs.iloc[maps.kept]
    return pd.DataFrame(
        {
            "tile_id": tile_id,
            "nucleus_id": np.arange(1, len(maps.kept) + 1, dtype=np.int32),
            "x": stats.x,
            "y": stats.y,
            "bbox_x0": stats.bbox[:, 0],
            "bbox_y0": stats.bbox[:, 1],
            "bbox_x1": stats.bbox[:, 2],
            "bbox_y1": stats.bbox[:, 3],
            "area": stats.area,
            "polygon": shapely.to_wkb(polygons[maps.kept]) if len(maps.kept) else [],
            "label": kept["label"].to_numpy(dtype=object),
            "labels": kept["labels"].to_numpy(dtype=object),
            "type_index": type_values(kept["label"]).astype(np.int32),
            "n_annotators": kept["n_annotators"].to_numpy(dtype=np.int64),
            "annotators": kept["annotators"].to_numpy(dtype=object),
            "source": kept["source"].to_numpy(dtype=object),
            "source_id": kept["source_id"].to_numpy(dtype=np.int64),
            "clipped": clipped[maps.kept],
            "contested": maps.contested,
        }
    )


def _vanished(
    tile_id: str, maps: TileMaps, attrs: pd.DataFrame, empty: NDArray[np.bool_]
) -> list[dict[str, Any]]:
    out = []
    for position, small in zip(maps.vanished, maps.vanished_small, strict=True):
        row = attrs.iloc[int(position)]
        reason = (
            "empty polygon"
            if empty[position]
            else "smaller than a pixel"
            if small
            else "covered by smaller (or equal, earlier) nuclei"
        )
        out.append(
            dict(
                tile_id=tile_id,
                source=str(row["source"]),
                source_id=int(row["source_id"]),
                label=row["label"],
                reason=reason,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class TilePlan:
    """What a campaign tile is and where its frozen image is (plain values: picklable)."""

    tile_id: str
    slide_id: str
    indication: str
    cohort: str
    project: str
    arm: str | None
    source: str
    image_path: str
    sha256: str
    source_mpp: float
    source_px: int
    fold: int


def campaign_tile(plan: TilePlan, nuclei: pd.DataFrame, *, mpp: float) -> TileResult:
    """A campaign tile: the frozen image (byte for byte unless resampled) and its nuclei's
    polygons rasterised on the dataset's grid."""
    path = Path(plan.image_path)
    data = path.read_bytes()
    if sha256_of(data) != plan.sha256:
        raise UserInputError(
            f"{path}: the image of tile {plan.tile_id} changed during the build; run "
            f"`histocurate dataset build` again (or `histocurate export --project "
            f"{plan.project}` if it was replaced)"
        )
    width, height = image_size(data)
    if (width, height) != (plan.source_px, plan.source_px):
        raise UserInputError(
            f"{path}: {width}x{height} px, but tile {plan.tile_id} was exported at "
            f"{plan.source_px} px; run `histocurate export --project {plan.project}` again"
        )
    side = target_side(plan.source_px, plan.source_mpp, mpp)
    resampled = side != plan.source_px
    image = data
    if resampled:
        image = encode_rgb(resample_image(decode_rgb(data), (side, side)), mpp=mpp)
    factor = side / plan.source_px
    geoms = scale_geoms(shapely.from_wkb(nuclei["polygon"].to_numpy()), factor, factor)
    clip = clip_to_tile(np.asarray(geoms, dtype=object), width=side, height=side)
    maps = rasterise_nuclei(clip.geoms, type_values(nuclei["label"]), shape=(side, side))
    frame = _nuclei_frame(plan.tile_id, maps, clip.geoms, nuclei, clip.clipped)
    row = dict(
        tile_id=plan.tile_id,
        slide_id=plan.slide_id,
        indication=plan.indication,
        cohort=plan.cohort,
        project=plan.project,
        mpp=mpp if resampled else plan.source_mpp,
        source_mpp=plan.source_mpp,
        resampled=resampled,
        width=side,
        height=side,
        image=image,
        inst_map=encode_map(maps.inst, bits=16),
        type_map=encode_map(maps.types, bits=8),
        fold=plan.fold,
        arm=plan.arm,
        source=plan.source,
        n_nuclei=len(frame),
        n_undetermined=int((frame["type_index"] == IGNORE_TYPE).sum()),
    )
    vanished = _vanished(plan.tile_id, maps, nuclei, clip.outside)
    return TileResult(row, frame, maps.contested_pixels, vanished)


@dataclass(frozen=True, slots=True)
class ImportedMeta:
    """What an imported image is (plain values)."""

    tile_id: str
    slide_id: str
    indication: str
    cohort: str
    fold: int
    source_mpp: float


def imported_tile(
    meta: ImportedMeta,
    rgb: NDArray[np.uint8],
    inst: NDArray[np.integer],
    labels: dict[int, str],
    *,
    mpp: float,
    contested: set[int] | None = None,
) -> TileResult:
    """An imported image and instance map (``labels``: instance id -> class label),
    resampled to the dataset's resolution (image bilinear, map nearest)."""
    height, width = inst.shape
    new_h = target_side(height, meta.source_mpp, mpp)
    new_w = target_side(width, meta.source_mpp, mpp)
    resampled = (new_h, new_w) != (height, width)
    if resampled:
        rgb = resample_image(rgb, (new_h, new_w))
        inst = resample_map(inst, (new_h, new_w))
    ids = np.unique(inst)
    ids = ids[ids > 0]
    lut = np.zeros(int(ids.max()) + 1 if len(ids) else 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    relabelled = lut[inst]
    outlines = map_polygons(relabelled)
    label_list = [labels[int(i)] for i in ids]
    values = type_values(pd.Series(label_list, dtype=object))
    type_lut = np.zeros(len(ids) + 1, dtype=np.uint8)
    type_lut[1:] = values
    stats = instance_stats(relabelled, len(ids))
    polygons = [outlines.get(k + 1, shapely.Polygon()) for k in range(len(ids))]
    lost = contested or set()
    frame = pd.DataFrame(
        {
            "tile_id": meta.tile_id,
            "nucleus_id": np.arange(1, len(ids) + 1, dtype=np.int32),
            "x": stats.x,
            "y": stats.y,
            "bbox_x0": stats.bbox[:, 0],
            "bbox_y0": stats.bbox[:, 1],
            "bbox_x1": stats.bbox[:, 2],
            "bbox_y1": stats.bbox[:, 3],
            "area": stats.area,
            "polygon": list(shapely.to_wkb(np.asarray(polygons, dtype=object))) if len(ids) else [],
            "label": label_list,
            "labels": [[v] for v in label_list],
            "type_index": values,
            "n_annotators": 0,
            "annotators": [[] for _ in label_list],
            "source": "imported",
            "source_id": ids.astype(np.int64),
            "clipped": False,
            "contested": [int(i) in lost for i in ids],
        }
    )
    row = dict(
        tile_id=meta.tile_id,
        slide_id=meta.slide_id,
        indication=meta.indication,
        cohort=meta.cohort,
        project=None,
        mpp=mpp if resampled else meta.source_mpp,
        source_mpp=meta.source_mpp,
        resampled=resampled,
        width=new_w,
        height=new_h,
        image=png_bytes(np.ascontiguousarray(rgb), mpp=mpp if resampled else meta.source_mpp),
        inst_map=encode_map(relabelled, bits=16),
        type_map=encode_map(type_lut[relabelled], bits=8),
        fold=meta.fold,
        arm=None,
        source="imported",
        n_nuclei=len(frame),
        n_undetermined=0,
    )
    return TileResult(row, frame)
