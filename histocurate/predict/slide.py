"""One slide: windows over its tissue tiles, inference, stitching, and its output files.

`predict_slide(slide_id, job=...)` is the stage's work per item. It is skipped when the
slide's cells file is fresh (`histocurate.predict.store.is_fresh`); otherwise it writes the
GeoJSON, the histoplus file, the counts and the thumbnail, then the cells partition last,
so that a slide interrupted half-way is redone by the next run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from data_schema import CELL_COUNTS, CELLS, TILES
from histocurate.cellvit.postprocess import HoverOptions
from histocurate.config import PredictConfig
from histocurate.digest import json_digest
from histocurate.errors import UserInputError
from histocurate.io import (
    partition_path,
    provenance_token,
    read_provenance,
    read_table,
    write_partition,
)
from histocurate.predict.engine import Engine, prefetch
from histocurate.predict.histoplus import cell_masks_json, write_cell_masks
from histocurate.predict.models import LoadedModel, load_model
from histocurate.predict.outputs import (
    cells_table,
    class_labels,
    counts_table,
    draw_thumbnail,
    tissue_mm2,
    write_geojson,
)
from histocurate.predict.stitch import stitch
from histocurate.predict.store import SlidePredictions, is_fresh
from histocurate.predict.windows import (
    Window,
    WindowGrid,
    is_blank,
    plan_resolution,
    plan_windows,
    read_level,
    window_geometry,
    window_tiles_text,
)
from histocurate.predict.worker import Placement, executor_for
from histocurate.runs import ItemOutcome
from histocurate.slides import TileRegion, read_tile, slide_info
from histocurate.workspace import Workspace


@dataclass(frozen=True)
class SlideJob:
    """What every slide of a run shares (picklable: it may cross to task workers)."""

    workspace: Path
    checkpoint: Path
    model: str
    settings: PredictConfig
    force: bool = False

    def options(self, mpp: float) -> HoverOptions:
        return HoverOptions.for_mpp(mpp, drop_untyped=self.settings.drop_untyped)

    def settings_digest(self) -> str:
        s = self.settings
        keep = {
            "window_um": s.window_um,
            "margin_um": s.margin_um,
            "precision": s.precision,
            "drop_untyped": s.drop_untyped,
            "hover": asdict(self.options(0.25)),
        }
        return json_digest(keep)


log = logging.getLogger(__name__)

_EXECUTORS: dict[tuple[int | None, str | None], Executor] = {}
_EXEC_LOCK = threading.Lock()


def shared_executor(settings: PredictConfig) -> Executor:
    """This process's post-processing executor (in-process inside daemonic workers)."""
    workers = 0 if multiprocessing.current_process().daemon else settings.workers
    key = (workers, settings.dask_address)
    with _EXEC_LOCK:
        if key not in _EXECUTORS:
            _EXECUTORS[key] = executor_for(workers, settings.dask_address)
        return _EXECUTORS[key]


def close_executors(*, cancel: bool = False) -> None:
    """Shut down this process's executors (a Dask one closes its client), after their jobs
    or, with ``cancel`` (a run stopped by an error), dropping those not started. Each is
    closed even when another fails to (a scheduler gone away: logged, not raised, so that
    the end of a run never hides the run's own error)."""
    with _EXEC_LOCK:
        executors = list(_EXECUTORS.values())
        _EXECUTORS.clear()
    for executor in executors:
        try:
            executor.shutdown(wait=True, cancel_futures=cancel)
        except Exception as exc:  # closing is best effort: said in the log
            log.warning("closing the post-processing executor %r failed: %s", executor, exc)


def _read(window: Window, *, path: str, level: int, downsample: float, px: int) -> Any:
    size = max(1, round(window.side0 / downsample))
    region = TileRegion(path, window.x0, window.y0, level, size, px)
    rgb = read_tile(region)
    scale = size * downsample / px  # windows are square: one scale on both axes
    return window, rgb, Placement((float(window.x0), float(window.y0)), (scale, scale))


def _slide_provenance(job: SlideJob, tiles_path: Path, loaded_digest: str) -> dict[str, str]:
    return {
        "checkpoint": loaded_digest,
        "tiles": provenance_token(read_provenance(tiles_path)) if tiles_path.exists() else "",
        "settings": job.settings_digest(),
    }


def infer_slide(
    job: SlideJob,
    loaded: LoadedModel,
    grid: WindowGrid,
    slide_path: str,
    downsamples: tuple[float, ...],
    tiles: Any,
) -> tuple[Any, dict[str, Any]]:
    """Run the windows of ``grid`` and stitch them: (stitched cells, counters)."""
    s = job.settings
    res = grid.resolution
    level = read_level(downsamples, res.scale)
    read = partial(
        _read,
        path=slide_path,
        level=level,
        downsample=downsamples[level],
        px=grid.geometry.window_px,
    )
    engine = Engine(
        loaded,
        executor=shared_executor(s),
        batch_size=s.batch_size,
        precision=s.precision,
        mpp=res.model_mpp,
        options=job.options(res.model_mpp),
    )
    items = prefetch(read, grid.windows, threads=s.read_threads, ahead=2 * s.batch_size)
    parts = []
    for result in engine.run(((w.index, rgb, p) for w, rgb, p in items), skip=is_blank):
        parts.append(result)
    by_index = {w.index: w for w in grid.windows}
    nan = [by_index[p.key] for p in parts if p.error]
    start = time.perf_counter()
    stitched = stitch(grid, parts, tiles, n_classes=engine.n_classes)
    t = engine.timings
    counters = {
        "windows": len(grid.windows),
        "blank": sum(p.skipped for p in parts),
        "nan": len(nan),
        "read_wait": t.read_wait,
        "forward": t.forward,
        "post_wait": t.postprocess_wait,
        "post_cpu": t.postprocess_cpu,
        "stitch": time.perf_counter() - start,
        "found": stitched.found,
        "cut": stitched.cut,
        "duplicates": stitched.duplicates,
        "off_tissue": stitched.off_tissue,
        "nan_windows": [f"window {w.index} (tiles {window_tiles_text(w)})" for w in nan],
    }
    return stitched, counters


def predict_slide(slide_id: str, *, job: SlideJob) -> ItemOutcome:
    """Predict one slide (the stage's item of work); raises `UserInputError` when the
    slide cannot be predicted (no tiles, a resolution the model cannot take)."""
    started = time.perf_counter()
    ws = Workspace(job.workspace)
    tiles_path = partition_path(ws.tiles, slide_id)
    if not tiles_path.exists():
        raise UserInputError(
            f"slide {slide_id} has no tiles ({tiles_path} is missing); run `histocurate tile` "
            "first (it tiles every slide of the manifest)"
        )
    tiles = read_table(tiles_path, TILES)
    if tiles.empty:
        raise UserInputError(
            f"slide {slide_id}: no tile on tissue in {tiles_path}; nothing to predict (lower "
            "[tiling] tissue_threshold and run `histocurate tile --force`)"
        )
    out = SlidePredictions(job.workspace, job.model)
    loaded = load_model(job.checkpoint, job.settings.device)
    provenance = _slide_provenance(job, tiles_path, loaded.digest)
    provenance["classes"] = json.dumps(list(loaded.info.classes))
    if not job.force and is_fresh(out.cells(slide_id), provenance, job.checkpoint):
        return ItemOutcome(slide_id, "skipped")
    slide_path = str(tiles["slide_path"].iloc[0])
    res = plan_resolution(
        float(tiles["mpp"].iloc[0]), loaded.info.mpp, slide=slide_id, checkpoint=job.checkpoint.name
    )
    s = job.settings
    geometry = window_geometry(
        window_um=s.window_um, margin_um=s.margin_um, mpp=res.model_mpp, patch=loaded.patch
    )
    grid = plan_windows(tiles, geometry, res, slide_id=slide_id)
    info = slide_info(slide_path, mpp_override=float(tiles["mpp"].iloc[0]))
    stitched, counters = infer_slide(job, loaded, grid, slide_path, info.level_downsamples, tiles)
    write_start = time.perf_counter()
    labels = class_labels(loaded.info.classes)
    table = cells_table(slide_id, stitched, labels, mpp=res.slide_mpp)
    cells = table.to_pandas()
    colours = {k: v for k, v in zip(labels[1:], loaded.info.colours, strict=False) if k is not None}
    tissue = tissue_mm2(tiles)
    counts = counts_table(slide_id, cells["label"], tissue)
    write_geojson(out.geojson(slide_id), cells, colours)
    text = cell_masks_json(
        cells,
        class_names=loaded.info.classes,
        width=info.width,
        height=info.height,
        mpp=res.slide_mpp,
        model_name=job.model,
        inference_mpp=res.model_mpp,
    )
    write_cell_masks(out.cell_masks(slide_id), text)
    write_partition(counts, out.counts_dir, slide_id, CELL_COUNTS)
    draw_thumbnail(Path(slide_path), cells, colours, out.thumbnail(slide_id))
    write_partition(table, out.cells_dir, slide_id, CELLS, provenance=provenance)
    counters["write"] = time.perf_counter() - write_start
    counters["tissue_mm2"] = tissue
    counters["density"] = len(cells) / tissue if tissue > 0 else float("nan")
    if res.note:
        counters["note"] = res.note
    return ItemOutcome(
        slide_id, "done", count=len(cells), seconds=time.perf_counter() - started, extra=counters
    )


def stored_counts(out: SlidePredictions, slide_ids: list[str]) -> Any:
    """The counts tables of these slides (those that have one), concatenated."""
    import pandas as pd

    frames = [read_table(out.counts(s), CELL_COUNTS) for s in slide_ids if out.counts(s).exists()]
    return pd.concat(frames, ignore_index=True) if frames else None
