"""The two segmenters behind one interface: NuClick (weights) and the classical watershed.

Both take images with clicks and give `nuclick.SegmentationResult`s. Each works at its
own resolution (NuClick: the checkpoint's, 0.25 um/px for the public weights; the
watershed's pixel settings: 0.25 um/px); tiles read at another resolution are resized
for the segmenter and the outlines scaled back, so that a 20x tile gets the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import shapely

from histocurate.errors import UserInputError
from histocurate.imaging import resize_labels, resize_rgb
from nuclick.errors import NuClickError
from nuclick.postprocess import SegmentationResult
from nuclick.predict import PredictOptions
from nuclick.watershed import WatershedOptions, watershed_segment

SEGMENTERS = ("nuclick", "watershed")
RESCALE_TOLERANCE = 0.1  # resize only when resolutions differ by more than 10%


class Segmenter(Protocol):
    """Clicks of many images -> one result per image, at the segmenter's resolution."""

    name: str
    mpp: float

    def segment_many(
        self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]
    ) -> list[SegmentationResult]: ...


@dataclass
class WatershedSegmenter:
    """Seeded watershed on haematoxylin, limited to a radius (no weights needed)."""

    options: WatershedOptions = field(default_factory=WatershedOptions)
    name: str = "watershed"
    mpp: float = 0.25

    def segment_many(
        self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]
    ) -> list[SegmentationResult]:
        return [
            watershed_segment(img, pts, options=self.options)
            for img, pts in zip(images, points, strict=True)
        ]


@dataclass
class NuClickSegmenter:
    """NuClick with loaded weights; all clicks of all images share batches."""

    model: object
    options: PredictOptions
    device: str = "auto"
    name: str = "nuclick"
    mpp: float = 0.25

    def segment_many(
        self, images: Sequence[np.ndarray], points: Sequence[np.ndarray]
    ) -> list[SegmentationResult]:
        import torch

        from nuclick.predict import predict_many

        assert isinstance(self.model, torch.nn.Module)
        return predict_many(images, points, self.model, options=self.options, device=self.device)


def make_segmenter(
    name: str = "auto",
    checkpoint: str | Path | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
    threshold: float = 0.5,
) -> Segmenter:
    """The segmenter called ``name``: 'nuclick' (needs ``checkpoint``), 'watershed', 'auto'.

    'auto' is NuClick when a checkpoint is given, else the watershed.
    """
    if name == "auto":
        name = "nuclick" if checkpoint else "watershed"
    if name == "watershed":
        return WatershedSegmenter()
    if name != "nuclick":
        raise UserInputError(f"unknown segmenter {name!r}: use one of {', '.join(SEGMENTERS)}")
    if checkpoint is None:
        raise UserInputError(
            "the nuclick segmenter needs weights: pass --checkpoint (or set segment.checkpoint "
            "in histocurate.toml; train with `nuclick train`), or use --segmenter watershed"
        )
    from nuclick.model import load_model
    from nuclick.predict import resolve_device

    dev = resolve_device(device)
    try:
        model, info = load_model(checkpoint, device=dev)
    except NuClickError as exc:
        raise UserInputError(str(exc)) from None
    options = PredictOptions(patch_size=info.patch_size, batch_size=batch_size, threshold=threshold)
    return NuClickSegmenter(model, options, device=str(dev), mpp=info.mpp)


def _scale_factor(image_mpp: float | None, segmenter_mpp: float) -> float:
    if image_mpp is None or image_mpp <= 0:
        return 1.0
    factor = image_mpp / segmenter_mpp
    return 1.0 if abs(factor - 1.0) <= RESCALE_TOLERANCE else factor


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
    return resize_rgb(np.asarray(image, dtype=np.uint8), shape)


def _scaled_back(
    result: SegmentationResult, factor: float, shape: tuple[int, int]
) -> SegmentationResult:
    polygons = [
        shapely.affinity.scale(p, 1 / factor, 1 / factor, origin=(0, 0)) if not p.is_empty else p
        for p in result.polygons
    ]
    inst = resize_labels(result.instance_map, shape)
    return replace(result, polygons=polygons, instance_map=inst.astype(np.int32))


def segment_images(
    images: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    *,
    segmenter: Segmenter,
    mpp: Sequence[float | None] | None = None,
) -> list[SegmentationResult]:
    """Segment the clicks of several images, each resized to the segmenter's resolution."""
    mpps = list(mpp) if mpp is not None else [None] * len(images)
    factors = [_scale_factor(m, segmenter.mpp) for m in mpps]
    work_images, work_points = [], []
    for img, pts, f in zip(images, points, factors, strict=True):
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if f != 1.0:
            img, pts = _resized(np.asarray(img), f), pts * f
        work_images.append(img)
        work_points.append(pts)
    try:
        results = segmenter.segment_many(work_images, work_points)
    except NuClickError as exc:
        raise UserInputError(str(exc)) from None
    return [
        r if f == 1.0 else _scaled_back(r, f, np.asarray(img).shape[:2])
        for r, f, img in zip(results, factors, images, strict=True)
    ]


def segment_points(
    image: np.ndarray, points: np.ndarray, *, segmenter: Segmenter, mpp: float | None = None
) -> SegmentationResult:
    """Segment the nuclei clicked at ``points`` ((N, 2) x, y, tile pixels) in one tile.

    Returns the instance map, one shapely polygon per point (pixel-edge coordinates) and
    the fallback flags. ``mpp`` is the tile's resolution (None: the segmenter's own).
    """
    return segment_images([image], [points], segmenter=segmenter, mpp=[mpp])[0]
