"""The post-processing side of inference: what a worker gets (an item's maps and where its
pixels go) and gives back (its nuclei, never the instance map), and the executors.

`postprocess_item` runs `histocurate.cellvit.postprocess.instances_from_maps` on one item
and moves the nuclei to the output frame (slide or tile pixels). `executor_for` gives the
pool it runs on: spawned processes (safe beside CUDA), a Dask cluster's executor
(`DaskExecutor`: it owns its client, closed by ``shutdown``), or the calling thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from histocurate.cellvit.postprocess import HoverOptions, instances_from_maps
from histocurate.errors import UserInputError


@dataclass(frozen=True, slots=True)
class Placement:
    """Output frame of an item's pixels: ``out = origin + scale * px`` with ``origin`` and
    ``scale`` per axis (x, y); ``crop`` (h, w) of the maps that are real pixels (the rest
    pads the input to a multiple of the patch). The scales differ where an item was
    resampled to sizes rounded apart (a dataset tile of 301 x 200 px halved: 150 x 100)."""

    origin: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    crop: tuple[int, int] | None = None


@dataclass
class WindowCells:
    """The nuclei of one item in the output frame (arrays of equal length)."""

    key: Any
    x: np.ndarray
    y: np.ndarray
    bbox: np.ndarray  # (n, 4) x0, y0, x1, y1 in the output frame
    touch: np.ndarray  # (n, 4) bool: reaches the item's left, top, right, bottom edge
    area: np.ndarray  # area of the outline, output-frame units squared
    type_index: np.ndarray
    confidence: np.ndarray
    probs: np.ndarray  # (n, classes + 1)
    wkb: np.ndarray  # object: WKB bytes in the output frame
    error: str | None = None  # the item gave no nuclei: why
    skipped: bool = False  # wholly off tissue
    seconds: float = 0.0  # post-processing time in the worker

    def __len__(self) -> int:
        return int(self.x.size)

    @classmethod
    def empty(cls, key: Any, n_classes: int, **kw: Any) -> WindowCells:
        z = np.zeros(0)
        return cls(
            key,
            z,
            z,
            np.zeros((0, 4)),
            np.zeros((0, 4), bool),
            z,
            np.zeros(0, np.int32),
            np.zeros(0, np.float32),
            np.zeros((0, n_classes), np.float32),
            np.zeros(0, object),
            **kw,
        )


def postprocess_item(
    key: Any,
    maps: tuple[np.ndarray, np.ndarray, np.ndarray],
    placement: Placement,
    mpp: float,
    options: HoverOptions,
) -> WindowCells:
    """One item's maps (NP foreground probability, HV, NT probabilities; float16) -> its
    nuclei in the output frame (runs in a worker process)."""
    start = time.process_time()
    np_prob, hv, tp = maps
    n_classes = tp.shape[0]
    _, cells = instances_from_maps(np_prob, hv, tp, mpp=mpp, options=options)
    if not len(cells):
        return WindowCells.empty(key, n_classes, seconds=time.process_time() - start)
    (ox, oy), (sx, sy) = placement.origin, placement.scale
    h, w = np_prob.shape
    box = cells[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy(np.float64)
    touch = np.stack([box[:, 0] <= 0, box[:, 1] <= 0, box[:, 2] >= w, box[:, 3] >= h], axis=1)
    # collinear vertices dropped: the same outline with about 40 % of the vertices (the
    # pixel-edge staircase has many), so smaller files and cheaper geometry downstream
    geoms = shapely.simplify(shapely.from_wkb(cells["polygon"].to_numpy(object)), 0.0)
    if (ox, oy, sx, sy) != (0.0, 0.0, 1.0, 1.0):
        geoms = shapely.transform(geoms, lambda c: c * np.array([sx, sy]) + np.array([ox, oy]))
        box = box * np.array([sx, sy, sx, sy]) + np.array([ox, oy, ox, oy])
    probs = cells[[f"prob_{c}" for c in range(n_classes)]].to_numpy(np.float32)
    return WindowCells(
        key=key,
        x=cells["x"].to_numpy(np.float64) * sx + ox,
        y=cells["y"].to_numpy(np.float64) * sy + oy,
        bbox=box,
        touch=touch,
        area=shapely.area(geoms),
        type_index=cells["type"].to_numpy(np.int32),
        confidence=cells["confidence"].to_numpy(np.float32),
        probs=probs,
        wkb=np.asarray(shapely.to_wkb(geoms), dtype=object),
        seconds=time.process_time() - start,
    )


class InlineExecutor(Executor):
    """Runs each job when submitted, in the calling thread (``workers = 0``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception as exc:  # the caller reads it from the future, as from a pool
            done.set_exception(exc)
        return done


class DaskExecutor(Executor):
    """A Dask cluster's executor that owns its `distributed.Client`: ``shutdown`` waits for
    (or cancels) its jobs, then closes the client (the scheduler and workers stay up)."""

    def __init__(self, address: str) -> None:
        from distributed import Client

        try:  # not the default client: a Dask session or task runner around us keeps its own
            self.client = Client(address, set_as_default=False)
        except ValueError as exc:  # a port that is no number, an unknown scheme
            raise UserInputError(
                f"[predict] dask_address {address}: not a Dask scheduler address ({exc}); "
                "give tcp://host:port"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise UserInputError(
                f"[predict] dask_address {address}: no Dask scheduler answers there "
                f"({type(exc).__name__}: {exc}); start one (`dask scheduler`, and workers "
                "with histocurate installed) or unset dask_address to post-process on this "
                "machine"
            ) from None
        # pure=False: the maps are not hashed into task keys (each item is its own job)
        self._executor = self.client.get_executor(pure=False)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self._executor.shutdown(wait=wait and not cancel_futures)
        finally:
            self.client.close()


def _single_thread() -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def executor_for(workers: int | None, dask_address: str | None = None) -> Executor:
    """The post-processing executor: a Dask cluster's (its client closed by ``shutdown``),
    ``workers`` spawned processes (safe beside CUDA; None: CPUs - 1), or in-process for 0."""
    if dask_address:
        return DaskExecutor(dask_address)
    count = default_workers() if workers is None else workers
    if count == 0:
        return InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(count, mp_context=context, initializer=_single_thread)
