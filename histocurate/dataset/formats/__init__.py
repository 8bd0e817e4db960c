"""Exchange formats: PanNuke, CoNSeP and Lizard importers; PanNuke (the official download's
numpy layout), CellViT (the per-image folders CellViT's training loader reads) and QuPath
GeoJSON exporters (see each module for the layout and the class mapping)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.runs import Mapper, Progress

IMPORT_FORMATS = ("pannuke", "consep", "lizard")
EXPORT_FORMATS = ("pannuke", "cellvit", "geojson")


def run_dataset_import(
    config: HistocurateConfig,
    fmt: str,
    directory: Path,
    *,
    name: str,
    mpp: float | None = None,
    source_mpp: float | None = None,
    mapper: Mapper = map,
    progress: Progress | None = None,
) -> Any:
    """Import a public dataset folder as a version of dataset ``name`` (a `DatasetRun`)."""
    from histocurate.dataset.formats.common import run_import

    directory = Path(directory)
    if not directory.is_dir():
        raise UserInputError(f"{directory}: not a folder")
    if fmt == "pannuke":
        from histocurate.dataset.formats.pannuke import pannuke_plan

        plan = pannuke_plan(directory, source_mpp=source_mpp)
    elif fmt in ("consep", "lizard"):
        from histocurate.dataset.formats.mat import mat_plan

        plan = mat_plan(directory, fmt, source_mpp=source_mpp)
    else:
        raise UserInputError(f"unknown format {fmt!r}: one of {', '.join(IMPORT_FORMATS)}")
    return run_import(config, plan, name=name, mpp=mpp, mapper=mapper, progress=progress)


def export_dataset(
    version: Any, fmt: str, out: Path, *, classes: str = "dataset"
) -> dict[str, Any]:
    """Export a `DatasetVersion` as ``fmt`` under ``out``; returns counts.

    ``classes`` (cellvit only): ``dataset`` (the version's classes) or ``pannuke``."""
    if fmt == "cellvit":
        from histocurate.dataset.formats.cellvit import export_cellvit

        return export_cellvit(version, out, classes=classes)
    if fmt == "pannuke":
        from histocurate.dataset.formats.pannuke import export_pannuke

        return export_pannuke(version, out)
    if fmt == "geojson":
        from histocurate.dataset.formats.geojson import export_geojson

        return export_geojson(version, out)
    raise UserInputError(f"unknown format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
