"""Batched NuClick inference: clicks of many images -> instance maps and polygons.

All clicks of all images go through the network in batches of ``batch_size`` patches (a
batch may hold clicks of several images); each patch is post-processed on its own
(`nuclick.postprocess`), then every image's masks are merged by score.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from nuclick.guidance import build_inputs, check_image, check_points, click_pixels, pad_to_patch
from nuclick.postprocess import (
    FALLBACK_RADIUS,
    PatchMask,
    SegmentationResult,
    finalize,
    keep_clicked_component,
    resolve_overlaps,
)


@dataclass(frozen=True)
class PredictOptions:
    """Inference settings (pixel sizes at the model's resolution)."""

    patch_size: int = 128
    batch_size: int = 64
    threshold: float = 0.5
    min_size: int = 10
    fallback_radius: int = FALLBACK_RADIUS
    duplicate_px: float = 2.0  # clicks closer than this mark the same nucleus
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)


def duplicate_groups(points: np.ndarray, radius: float) -> np.ndarray:
    """For each click, the index of the first click closer than ``radius`` (itself if none)."""
    same_as = np.arange(len(points))
    if len(points) < 2 or radius <= 0:
        return same_as
    tree = cKDTree(points)
    for i, j in sorted(tree.query_pairs(radius, output_type="ndarray").tolist()):
        root = same_as[i]
        if same_as[j] == j:
            same_as[j] = root
    return same_as


@dataclass
class _Job:
    image: np.ndarray  # padded to the patch size
    shape: tuple[int, int]  # original (H, W)
    rc: np.ndarray
    same_as: np.ndarray
    run: np.ndarray  # indices of the clicks that go through the network
    patches: list[PatchMask | None]
    origins: np.ndarray
    fallback: np.ndarray


def _prepare(image: np.ndarray, points: np.ndarray, opts: PredictOptions, k: int) -> _Job:
    name = f"image #{k}"
    image = check_image(image, name=name)
    shape = (int(image.shape[0]), int(image.shape[1]))
    pts = check_points(points, shape, name=f"points of {name}")
    rc = click_pixels(pts)
    same_as = duplicate_groups(pts, opts.duplicate_px)
    run = np.flatnonzero(same_as == np.arange(len(pts)))
    n = len(pts)
    return _Job(
        image=pad_to_patch(image, opts.patch_size),
        shape=shape,
        rc=rc,
        same_as=same_as,
        run=run,
        patches=[None] * n,
        origins=np.zeros((n, 2), dtype=np.int64),
        fallback=np.zeros(n, dtype=bool),
    )


def _batches(jobs: list[_Job], batch_size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Chunks of at most ``batch_size`` clicks, as (job index, click indices) pieces."""
    pieces: list[tuple[int, np.ndarray]] = []
    filled = 0
    for j, job in enumerate(jobs):
        start = 0
        while start < len(job.run):
            take = min(batch_size - filled, len(job.run) - start)
            pieces.append((j, job.run[start : start + take]))
            filled, start = filled + take, start + take
            if filled == batch_size:
                yield pieces
                pieces, filled = [], 0
    if pieces:
        yield pieces


def _autocast(device: torch.device, amp: bool) -> torch.autocast | nullcontext[None]:
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _crop(patch: PatchMask, origin: np.ndarray) -> tuple[PatchMask, np.ndarray]:
    """Keep only the bounding box of the mask (memory: thousands of clicks per image)."""
    sl = ndi.find_objects(patch.mask.astype(np.int8))[0]
    assert sl is not None
    cropped = PatchMask(patch.mask[sl].copy(), patch.score[sl].copy(), patch.fallback)
    return cropped, origin + np.array([sl[0].start, sl[1].start])


def _postprocess(
    jobs: list[_Job],
    probs: torch.Tensor,
    metas: list[tuple[int, int, np.ndarray]],
    opts: PredictOptions,
) -> None:
    """Per-patch post-processing of one batch (each patch on its own, in 2-D)."""
    for prob, (j, i, origin) in zip(probs.cpu().numpy(), metas, strict=True):
        job = jobs[j]
        click = job.rc[i] - origin
        patch = keep_clicked_component(
            prob,
            (int(click[0]), int(click[1])),
            threshold=opts.threshold,
            min_size=opts.min_size,
            fallback_radius=opts.fallback_radius,
        )
        job.patches[i], job.origins[i] = _crop(patch, origin)
        job.fallback[i] = patch.fallback


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def predict_many(
    images: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    model: torch.nn.Module,
    *,
    options: PredictOptions | None = None,
    device: str | torch.device | None = None,
) -> list[SegmentationResult]:
    """Segment the clicks of many images in shared batches; one result per image."""
    opts = options or PredictOptions()
    if len(images) != len(points):
        raise ValueError(f"{len(images)} images but {len(points)} point arrays")
    if opts.patch_size % 32:
        raise ValueError(f"patch_size must be a multiple of 32, got {opts.patch_size}")
    dev = resolve_device(device)
    model.eval()
    jobs = [
        _prepare(img, pts, opts, k) for k, (img, pts) in enumerate(zip(images, points, strict=True))
    ]
    # Pipelined: the next batch is built and launched before the previous one is
    # post-processed, so that on a GPU the network and the CPU work overlap.
    pending: tuple[torch.Tensor, list[tuple[int, int, np.ndarray]]] | None = None
    for pieces in _batches(jobs, opts.batch_size):
        arrays: list[np.ndarray] = []
        metas: list[tuple[int, int, np.ndarray]] = []
        for j, idx in pieces:
            job = jobs[j]
            inputs, origins = build_inputs(
                job.image, job.rc, idx, patch_size=opts.patch_size, same_nucleus=job.same_as
            )
            arrays.append(inputs)
            metas.extend((j, int(i), o) for i, o in zip(idx, origins, strict=True))
        stacked = np.concatenate(arrays)
        if dev.type == "cuda" and len(stacked) < opts.batch_size:  # one shape: no re-tuning
            stacked = np.concatenate(
                [
                    stacked,
                    np.zeros((opts.batch_size - len(stacked), *stacked.shape[1:]), np.float32),
                ]
            )
        batch = torch.from_numpy(stacked).to(dev, non_blocking=True)
        with _autocast(dev, opts.amp):
            logits = model(batch)
        if pending is not None:
            _postprocess(jobs, *pending, opts)
        pending = (torch.sigmoid(logits.float())[: len(metas), 0], metas)
    if pending is not None:
        _postprocess(jobs, *pending, opts)
    results = []
    for job in jobs:
        labels = resolve_overlaps(job.shape, job.rc, job.patches, job.origins)
        job.fallback = job.fallback[job.same_as]
        results.append(
            finalize(
                labels, job.rc, fallback=job.fallback, same_as=job.same_as, segmenter="nuclick"
            )
        )
    return results


def predict(
    image: np.ndarray,
    points: np.ndarray,
    model: torch.nn.Module,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    options: PredictOptions | None = None,
) -> SegmentationResult:
    """Segment the nuclei clicked at ``points`` ((N, 2) x, y) in one RGB image."""
    opts = options or PredictOptions()
    if batch_size is not None:
        opts = replace(opts, batch_size=batch_size)
    return predict_many([image], [points], model, options=opts, device=device)[0]
