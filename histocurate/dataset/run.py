"""The run object of a dataset build or import (`DatasetRun`, its one `Report`) and the
process-pool mapper the command line uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from histocurate.runs import Mapper, Report, StageRun


@dataclass
class DatasetRun(StageRun):
    """A build (or import): the per-slide outcomes, the version and its description."""

    stage: ClassVar[str] = "dataset"
    name: str = ""
    version: str = ""
    path: Path | None = None
    status: str = "not written"  # built | up to date | not written
    info: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # plan / tiles / assemble, s

    def report(self) -> Report:
        from histocurate.dataset.card import class_frame

        counts = self.info.get("counts", {})
        summary = [
            f"dataset {self.name}@{self.version}: {self.status} ({self.seconds:.1f} s)",
        ]
        if counts:
            summary.append(
                f"{counts['tiles']} tiles, {counts['nuclei']} nuclei "
                f"({counts['undetermined']} undetermined), {counts['slides']} slides"
            )
            raster = self.info.get("rasterisation", {})
            summary.append(
                f"overlaps: {raster.get('contested_pixels', 0)} pixels, "
                f"{raster.get('contested_nuclei', 0)} nuclei; clipped "
                f"{raster.get('clipped_nuclei', 0)}; vanished {len(raster.get('vanished', []))}; "
                f"resampled tiles {raster.get('resampled_tiles', 0)}"
            )
        left = self.info.get("left_out", [])
        if left:
            summary.append(f"{len(left)} exported tile(s) left out (see the card)")
        tables = (
            {"classes per fold": class_frame(self.info, "per_fold").reset_index(names="cell type")}
            if counts
            else {}
        )
        images = [self.path / "class_distribution.png"] if self.path else []
        return Report(
            title=f"Dataset {self.name}",
            summary=summary,
            table=self.outcome_table("tiles").rename(columns={"item": "slide / tile"}),
            tables=tables,
            warnings=self.warnings + self.failure_lines(),
            images=images,
            body=self.card or None,
            outputs={"dataset": self.path} if self.path else {},
        )


@contextmanager
def parallel_mapper(workers: int) -> Iterator[Mapper]:
    """The plain `map`, or a pool of ``workers`` processes (results in order)."""
    if workers <= 1:
        yield map
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool.map
