"""Batched NuClick inference: clicks of many images -> instance maps and polygons.

All clicks of all images go through the network in batches of ``batch_size`` patches (a
batch may hold clicks of several images); each patch is post-processed on its own
(`nuclick.postprocess`), then every image's masks are merged by score.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context

import numpy as np
import torch
from scipy.spatial import cKDTree

from histocurate.torchutil import amp_precision, autocast
from histocurate.torchutil import resolve_device as resolve_device  # the one device check
from nuclick.guidance import build_inputs, check_image, check_points, click_pixels, pad_to_patch
from nuclick.postprocess import (
    FALLBACK_RADIUS,
    PatchMask,
    SegmentationResult,
    assemble,
    clicked_components,
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
    # Post-processing processes: 0 = in this process; None = auto (CPU count - 1 when
    # there are more than 2 CPUs and several images, else 0). Same results either way.
    workers: int | None = None


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


_Meta = tuple[int, int, np.ndarray]  # (image index, click index, patch origin)


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
    remaining: int  # clicks still to come back from the network


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
        remaining=len(run),
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


class _Collector:
    """Post-processes batches and assembles images, here or in worker processes.

    With a pool, each batch is cut into chunks of clicks for the workers (the patch
    stage) and each image is assembled in a worker as soon as its last click is back, so
    that the network, the patch stage and the assembly of earlier images all overlap.
    """

    def __init__(self, jobs: list[_Job], opts: PredictOptions, pool: Executor | None) -> None:
        self.jobs, self.opts, self.pool = jobs, opts, pool
        self.workers = getattr(pool, "_max_workers", 1) if pool is not None else 0
        self.pending: deque[tuple[Future[list[tuple[PatchMask, tuple[int, int]]]], list[_Meta]]]
        self.pending = deque()
        self.results: list[SegmentationResult | Future[SegmentationResult] | None]
        self.results = [None] * len(jobs)
        for j, job in enumerate(jobs):
            if not job.remaining:
                self._assemble(j)

    def add(self, probs: np.ndarray, metas: list[_Meta]) -> None:
        clicks = np.array([self.jobs[j].rc[i] - o for j, i, o in metas]).reshape(-1, 2)
        kw = (self.opts.threshold, self.opts.min_size, self.opts.fallback_radius)
        if self.pool is None:
            self._store(_clicked(probs, clicks, *kw), metas)
            return
        chunk = max(16, -(-len(metas) // self.workers))
        for start in range(0, len(metas), chunk):
            part = slice(start, start + chunk)
            # copies: the pool pickles later, and the batch buffer gets reused
            future = self.pool.submit(_clicked, probs[part].copy(), clicks[part], *kw)
            self.pending.append((future, metas[part]))
        self._drain(limit=2 * self.workers)

    def finish(self) -> list[SegmentationResult]:
        self._drain(limit=0)
        out = [r.result() if isinstance(r, Future) else r for r in self.results]
        assert all(r is not None for r in out)
        return [r for r in out if r is not None]

    def _drain(self, *, limit: int) -> None:
        while self.pending and (len(self.pending) > limit or self.pending[0][0].done()):
            future, metas = self.pending.popleft()
            self._store(future.result(), metas)

    def _store(self, found: list[tuple[PatchMask, tuple[int, int]]], metas: list[_Meta]) -> None:
        for (patch, offset), (j, i, origin) in zip(found, metas, strict=True):
            job = self.jobs[j]
            job.patches[i] = patch
            job.origins[i] = origin + offset
            job.fallback[i] = patch.fallback
            job.remaining -= 1
            if not job.remaining:
                self._assemble(j)

    def _assemble(self, j: int) -> None:
        job = self.jobs[j]
        args = (job.shape, job.rc, job.same_as, job.patches, job.origins, job.fallback)
        if self.pool is None:
            self.results[j] = assemble(*args, segmenter="nuclick")
        else:
            self.results[j] = self.pool.submit(assemble, *args, segmenter="nuclick")
        job.patches = []  # the pool holds its own reference until it has pickled them


def _clicked(
    probs: np.ndarray, clicks: np.ndarray, threshold: float, min_size: int, radius: int
) -> list[tuple[PatchMask, tuple[int, int]]]:
    return clicked_components(
        probs, clicks, threshold=threshold, min_size=min_size, fallback_radius=radius
    )


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """A pool kept for the life of the process (starting workers takes seconds); spawned,
    not forked, so that it is safe next to CUDA."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    return pool


def _n_workers(opts: PredictOptions, n_images: int) -> int:
    if opts.workers is not None:
        return max(0, opts.workers)
    cpus = os.cpu_count() or 1
    return cpus - 1 if cpus > 2 and n_images > 1 else 0


class _Inputs:
    """Reused input buffers (no 80 MB allocation and copy per batch); on CUDA two pinned
    ones, alternating, so that the host-to-device copy is asynchronous."""

    def __init__(self, opts: PredictOptions, dev: torch.device) -> None:
        p, self.dev = opts.patch_size, dev
        shape = (opts.batch_size, 5, p, p)
        pinned = dev.type == "cuda"
        self.buffers = [torch.empty(shape, pin_memory=pinned) for _ in range(1 + pinned)]
        self.events: list[torch.cuda.Event | None] = [None] * len(self.buffers)
        self.turn = 0

    def build(
        self, jobs: list[_Job], pieces: list[tuple[int, np.ndarray]], opts: PredictOptions
    ) -> tuple[torch.Tensor, list[_Meta]]:
        k = self.turn = (self.turn + 1) % len(self.buffers)
        event = self.events[k]
        if event is not None:
            event.synchronize()  # its last copy to the GPU is done
        host = self.buffers[k].numpy()
        metas: list[_Meta] = []
        filled = 0
        for j, idx in pieces:
            job = jobs[j]
            out = host[filled : filled + len(idx)]
            _, origins = build_inputs(
                job.image,
                job.rc,
                idx,
                patch_size=opts.patch_size,
                same_nucleus=job.same_as,
                out=out,
            )
            filled += len(idx)
            metas.extend((j, int(i), o) for i, o in zip(idx, origins, strict=True))
        if self.dev.type != "cuda":
            return self.buffers[k][:filled], metas
        host[filled:] = 0.0  # one shape on the GPU: no re-tuning for a short last batch
        batch = self.buffers[k].to(self.dev, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self.events[k] = copied
        return batch, metas


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
    workers = _n_workers(opts, len(jobs))
    collector = _Collector(jobs, opts, _pool(workers) if workers else None)
    # On CUDA, batch k's probabilities are copied to pinned memory right behind its forward
    # pass and post-processed while the GPU computes batch k + 1.
    pending: tuple[torch.Tensor, torch.cuda.Event | None, list[_Meta]] | None = None
    inputs = _Inputs(opts, dev)
    for pieces in _batches(jobs, opts.batch_size):
        batch, metas = inputs.build(jobs, pieces, opts)
        with autocast(dev, amp_precision(opts.amp, dev)):
            logits = model(batch)
        probs = torch.sigmoid(logits.float())[: len(metas), 0]
        event = None
        if dev.type == "cuda":
            host = torch.empty(probs.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(probs, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            probs = host
        if pending is not None:
            _hand_over(collector, *pending)
        pending = (probs, event, metas)
    if pending is not None:
        _hand_over(collector, *pending)
    return collector.finish()


def _hand_over(
    collector: _Collector, probs: torch.Tensor, event: torch.cuda.Event | None, metas: list[_Meta]
) -> None:
    if event is not None:
        event.synchronize()
    collector.add(probs.cpu().numpy(), metas)


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
