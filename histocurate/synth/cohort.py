"""Generate a synthetic cohort: slides, ground truth, manifest.

Each slide is a function of (seed, indication, index, size, mpp) only, so adding slides or
indications never changes the slides already made, and a slide whose files and settings
are already on disk is skipped (re-running is a no-op).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_schema import TRUTH
from histocurate.io import atomic_write_text, partition_path, write_partition
from histocurate.labels import LABELS
from histocurate.synth.layout import build_slide
from histocurate.synth.profiles import COHORTS
from histocurate.synth.render import Renderer
from histocurate.synth.tiff import write_pyramid
from histocurate.synth.truth import truth_frame

FORMAT_VERSION = 2  # bump when the generator's output changes, so old slides are remade
MANIFEST_COLUMNS = ("slide_id", "path", "indication", "cohort")


@dataclass(frozen=True, slots=True)
class SyntheticSlide:
    """One generated slide and its ground truth."""

    slide_id: str
    path: Path
    truth_path: Path
    indication: str
    cohort: str
    width: int
    height: int
    mpp: float
    seed: int
    n_nuclei: int
    label_counts: dict[str, int]


def slide_seed(seed: int, indication: str, index: int) -> int:
    """The seed of one slide: independent of how many slides or indications there are."""
    state = np.random.SeedSequence([seed, zlib.crc32(indication.encode()), index])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


_OFFSETS = {
    name: i for i, name in enumerate(("LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"))
}


def cohort_of(indication: str, index: int) -> str:
    """Spread each indication's slides over the synthetic cohorts (sites), round robin."""
    offset = _OFFSETS.get(indication, zlib.crc32(indication.encode()))
    return COHORTS[(offset + index) % len(COHORTS)]


def generate_slide(
    out_dir: Path, *, slide_id: str, indication: str, cohort: str, width_px: int,
    height_px: int, mpp: float, seed: int,
) -> SyntheticSlide:  # fmt: skip
    """Lay out, render and write one slide (TIFF, truth partition, settings sidecar)."""
    model = build_slide(
        indication=indication, cohort=cohort, width=width_px, height=height_px, mpp=mpp, seed=seed
    )
    renderer = Renderer(model)
    path = out_dir / "slides" / f"{slide_id}.tiff"
    write_pyramid(
        path, width=width_px, height=height_px, mpp=mpp, name=slide_id,
        render_strip=renderer.rows,
    )  # fmt: skip
    truth = truth_frame(slide_id, model.cells)
    truth_path = write_partition(truth, out_dir / "truth.parquet", slide_id, TRUTH)
    counts = truth["label"].value_counts()
    record = SyntheticSlide(
        slide_id=slide_id, path=path, truth_path=truth_path, indication=indication,
        cohort=cohort, width=width_px, height=height_px, mpp=mpp, seed=seed,
        n_nuclei=len(truth), label_counts={k: int(counts.get(k, 0)) for k in LABELS},
    )  # fmt: skip
    _write_sidecar(record)
    return record


def _sidecar(out_dir: Path, slide_id: str) -> Path:
    return out_dir / "slides" / f"{slide_id}.json"


def _settings(
    width: int, height: int, mpp: float, seed: int, indication: str, cohort: str
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION, "width": width, "height": height, "mpp": mpp, "seed": seed,
        "indication": indication, "cohort": cohort,
    }  # fmt: skip


def _write_sidecar(record: SyntheticSlide) -> None:
    data = asdict(record)
    data["path"] = record.path.name
    data["truth_path"] = record.truth_path.name
    settings = _settings(record.width, record.height, record.mpp, record.seed,
                         record.indication, record.cohort)  # fmt: skip
    text = json.dumps({"settings": settings, "record": data}, indent=1)
    atomic_write_text(_sidecar(record.path.parent.parent, record.slide_id), text)


def _existing(out_dir: Path, slide_id: str, settings: dict[str, Any]) -> SyntheticSlide | None:
    sidecar = _sidecar(out_dir, slide_id)
    tiff = out_dir / "slides" / f"{slide_id}.tiff"
    truth = partition_path(out_dir / "truth.parquet", slide_id)
    if not (sidecar.is_file() and tiff.is_file() and truth.is_file()):
        return None
    try:
        stored = json.loads(sidecar.read_text(encoding="utf-8"))
        if stored["settings"] != settings:
            return None
        data = stored["record"]
        data["path"], data["truth_path"] = tiff, truth
        return SyntheticSlide(**data)
    except (ValueError, KeyError, TypeError):
        return None


def generate_cohort(
    out_dir: Path,
    *,
    indications: Sequence[str],
    slides_per_indication: int,
    width_px: int,
    height_px: int,
    mpp: float = 0.25,
    seed: int = 0,
    on_slide: Callable[[SyntheticSlide], None] | None = None,
    force: bool = False,
    workers: int = 1,
) -> list[SyntheticSlide]:
    """Write ``out_dir/slides/<slide_id>.tiff`` and ``out_dir/truth.parquet/<slide_id>.parquet``.

    Slide ids are ``<INDICATION>-<index:03d>``. Slides already present with the same
    settings are kept unless ``force``. ``on_slide`` is called after each slide (in the
    order they finish). ``workers`` > 1 renders slides in that many processes.
    """
    out_dir = Path(out_dir)
    plan: list[tuple[str, dict[str, Any]]] = []
    for indication in indications:
        for index in range(slides_per_indication):
            slide_id = f"{indication}-{index:03d}"
            cohort = cohort_of(indication, index)
            sseed = slide_seed(seed, indication, index)
            job: dict[str, Any] = {
                "slide_id": slide_id, "indication": indication, "cohort": cohort,
                "width_px": width_px, "height_px": height_px, "mpp": mpp, "seed": sseed,
            }  # fmt: skip
            plan.append((slide_id, job))
    done: dict[str, SyntheticSlide] = {}
    todo = []
    for slide_id, job in plan:
        settings = _settings(width_px, height_px, mpp, job["seed"], job["indication"],
                             job["cohort"])  # fmt: skip
        record = None if force else _existing(out_dir, slide_id, settings)
        if record is None:
            todo.append(job)
        else:
            done[slide_id] = record
            if on_slide is not None:
                on_slide(record)
    # start-up of a worker process costs seconds: only worth it for large slides
    if workers > 1 and len(todo) > 1 and width_px * height_px >= 2048 * 2048:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            futures = [pool.submit(generate_slide, out_dir, **job) for job in todo]
            for future in as_completed(futures):
                record = future.result()
                done[record.slide_id] = record
                if on_slide is not None:
                    on_slide(record)
    else:
        for job in todo:
            record = generate_slide(out_dir, **job)
            done[record.slide_id] = record
            if on_slide is not None:
                on_slide(record)
    return [done[slide_id] for slide_id, _ in plan]


def manifest_text(slides: Sequence[SyntheticSlide], manifest: Path) -> str:
    """The manifest CSV: slide_id, path (relative to the manifest's folder), indication, cohort."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    base = Path(manifest).resolve().parent
    for s in slides:
        rel = Path(os.path.relpath(Path(s.path).resolve(), base)).as_posix()
        writer.writerow([s.slide_id, rel, s.indication, s.cohort])
    return buffer.getvalue()


def write_manifest(slides: Sequence[SyntheticSlide], manifest: Path) -> Path:
    """Write the manifest atomically and return its path."""
    atomic_write_text(manifest, manifest_text(slides, manifest))
    return Path(manifest)
