"""The inference engine: windows read ahead on threads, batched forward passes on the device
under autocast, HoVer post-processing in a process pool while the device runs the next batch.

`Engine.run(items)` takes ``(key, rgb, placement)`` items (a window of a slide or a dataset
tile; ``placement`` maps its pixels to the output frame) and yields one `WindowCells` per
item (by key; skipped items may come before the batch they were read with): the nuclei in
the output frame, or the reason the item gave none (its outputs held NaN, it was wholly
off tissue). The post-processing runs on an executor that the caller owns
(`histocurate.predict.worker.executor_for`); only the nuclei come back from a worker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from histocurate.cellvit.postprocess import HoverOptions
from histocurate.predict.models import LoadedModel
from histocurate.predict.worker import Placement, WindowCells, postprocess_item
from histocurate.torchutil import autocast


@dataclass
class Timings:
    """Where an engine's wall time went (seconds), plus the workers' CPU time."""

    read_wait: float = 0.0
    forward: float = 0.0
    postprocess_wait: float = 0.0
    postprocess_cpu: float = 0.0
    items: int = 0
    batches: int = 0

    def add(self, other: Timings) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


Item = tuple[Any, np.ndarray, Placement]


class Engine:
    """Batched inference of one model; post-processing on ``executor``."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        executor: Executor,
        batch_size: int = 8,
        precision: str = "auto",
        mpp: float = 0.25,
        options: HoverOptions | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.loaded, self.executor = loaded, executor
        self.batch_size, self.precision, self.mpp = batch_size, precision, mpp
        self.options = options or HoverOptions.for_mpp(mpp)
        self.max_pending = max_pending or 4 * batch_size
        self.timings = Timings()
        self.n_classes = loaded.model.n_types + 1

    def forward(self, images: list[np.ndarray]) -> tuple[list[tuple[np.ndarray, ...]], list[bool]]:
        """uint8 (H, W, 3) images of one size -> per image (NP prob, HV, NT probs) as
        float16 arrays, and whether every output value is finite."""
        loaded = self.loaded
        host = torch.from_numpy(np.stack(images))
        if loaded.device.type == "cuda":
            host = host.pin_memory()  # the copy runs asynchronously from pinned memory
        batch = host.to(loaded.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2)
        with loaded.lock, torch.inference_mode(), autocast(loaded.device, self.precision):
            x = loaded.model.normalise(batch).contiguous(memory_format=torch.channels_last)
            out = loaded.model(x)
            np_prob = torch.softmax(out["np"].float(), dim=1)[:, 1]
            tp = torch.softmax(out["tp"].float(), dim=1)
            hv = out["hv"].float()
            finite = (
                torch.isfinite(out["np"]).flatten(1).all(1)
                & torch.isfinite(hv).flatten(1).all(1)
                & torch.isfinite(out["tp"]).flatten(1).all(1)
            )
            half = [t.half().cpu().numpy() for t in (np_prob, hv, tp)]
            ok = finite.cpu().tolist()
        return [(half[0][k], half[1][k], half[2][k]) for k in range(len(images))], ok

    def run(
        self, items: Iterable[Item], *, skip: Callable[[np.ndarray], bool] | None = None
    ) -> Iterator[WindowCells]:
        """Yield each item's nuclei; ``skip(rgb)`` True: wholly off tissue (not run)."""
        pending: deque[tuple[Any, Future[WindowCells] | WindowCells]] = deque()
        batch: list[Item] = []
        source = iter(items)

        def drain(limit: int) -> Iterator[WindowCells]:
            while len(pending) > limit:
                _, job = pending.popleft()
                if isinstance(job, WindowCells):
                    yield job
                    continue
                start = time.perf_counter()
                result = job.result()
                self.timings.postprocess_wait += time.perf_counter() - start
                self.timings.postprocess_cpu += result.seconds
                yield result

        while True:
            start = time.perf_counter()
            item = next(source, None)
            self.timings.read_wait += time.perf_counter() - start
            if item is not None:
                key, rgb, _ = item
                if skip is not None and skip(rgb):
                    pending.append((key, WindowCells.empty(key, self.n_classes, skipped=True)))
                else:
                    self.timings.items += 1
                    batch.append(item)
            same_size = all(b[1].shape == batch[0][1].shape for b in batch)
            if batch and (item is None or len(batch) >= self.batch_size or not same_size):
                ready = batch if same_size else batch[:-1]
                batch = [] if same_size else batch[-1:]
                self._submit(ready, pending)
            yield from drain(self.max_pending)
            if item is None:
                if batch:
                    self._submit(batch, pending)
                    batch = []
                    continue
                break
        yield from drain(0)

    def _submit(self, batch: list[Item], pending: deque[Any]) -> None:
        start = time.perf_counter()
        maps, ok = self.forward([rgb for _, rgb, _ in batch])
        self.timings.forward += time.perf_counter() - start
        self.timings.batches += 1
        for (key, _, placement), one, finite in zip(batch, maps, ok, strict=True):
            if not finite:
                error = "the model's outputs hold NaN or infinite values"
                pending.append((key, WindowCells.empty(key, self.n_classes, error=error)))
                continue
            if placement.crop is not None:
                h, w = placement.crop
                one = (one[0][:h, :w].copy(), one[1][:, :h, :w].copy(), one[2][:, :h, :w].copy())
            three: tuple[np.ndarray, np.ndarray, np.ndarray] = (one[0], one[1], one[2])
            future = self.executor.submit(
                postprocess_item, key, three, placement, self.mpp, self.options
            )
            pending.append((key, future))


def prefetch(
    fn: Callable[[Any], Item], keys: Iterable[Any], *, threads: int, ahead: int
) -> Iterator[Item]:
    """``fn(key)`` for each key, in order, computed up to ``ahead`` items ahead on threads
    (reading slides: OpenSlide releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        queue: deque[Future[Item]] = deque()
        for key in keys:
            queue.append(pool.submit(fn, key))
            if len(queue) > ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
