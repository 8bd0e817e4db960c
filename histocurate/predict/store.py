"""Where predictions live, which checkpoint a name means, and when a prediction is stale.

Layout (workspace)::

    predictions/<model>/cells.parquet/<slide>.parquet    table cells (written last: the
                                                         slide is done when it exists)
    predictions/<model>/counts.parquet/<slide>.parquet   table cell_counts
    predictions/<model>/geojson/<slide>.geojson          QuPath detections
    predictions/<model>/cell_masks/<slide>.json          histoplus layout
    reports/predict/<model>/<slide>.png                  thumbnail with the cells
    datasets/<name>/<version>/predictions/<model>/cells.parquet   table tile_cells

``<model>`` is the run name for ``runs/<run>/best.pt`` (``<run>-last`` for last.pt), else
the checkpoint file's stem. A prediction records what it was made from (checkpoint digest,
input, settings) in its provenance; it is stale, and redone, when any of them changed or
when the checkpoint file is newer than the prediction (a run that saved a new best.pt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.io import read_provenance

RUNS_DIR = "runs"
PREDICTIONS_DIR = "predictions"


def resolve_checkpoint(config: HistocurateConfig, spec: str | Path) -> Path:
    """A checkpoint file from a path (file, or run folder) or a run name under ``runs/``."""
    raw = Path(spec).expanduser()
    candidates = [raw if raw.is_absolute() else Path.cwd() / raw, config.resolve(raw)]
    runs = config.workspace / RUNS_DIR
    if not raw.suffix and len(raw.parts) == 1:
        candidates.append(runs / raw)
    for path in candidates:
        if path.is_file():
            return path.resolve()
        if path.is_dir():
            for name in ("best.pt", "last.pt"):
                if (path / name).is_file():
                    return (path / name).resolve()
            raise UserInputError(
                f"{path}: a folder without best.pt or last.pt; pass a checkpoint file, or "
                "a run of `histocurate train` that saved one"
            )
    known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    raise UserInputError(
        f"no checkpoint {str(spec)!r}: not a file, nor a run under {runs} (runs there: "
        f"{', '.join(known) or 'none'}); pass a .pt file or a run name"
    )


def model_name(checkpoint: Path) -> str:
    """The folder name of a checkpoint's predictions.

    >>> model_name(Path("/w/runs/r1/best.pt")), model_name(Path("/w/runs/r1/last.pt"))
    ('r1', 'r1-last')
    >>> model_name(Path("/models/histoplus_cellvit_segmentor_40x.pt"))
    'histoplus_cellvit_segmentor_40x'
    """
    if checkpoint.parent.parent.name == RUNS_DIR:
        run = checkpoint.parent.name
        name = run if checkpoint.stem == "best" else f"{run}-{checkpoint.stem}"
    else:
        name = checkpoint.stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or "model"


@dataclass(frozen=True, slots=True)
class SlidePredictions:
    """The files of one model's slide predictions in a workspace."""

    workspace: Path
    model: str

    @property
    def root(self) -> Path:
        return self.workspace / PREDICTIONS_DIR / self.model

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells.parquet"

    @property
    def counts_dir(self) -> Path:
        return self.root / "counts.parquet"

    def cells(self, slide_id: str) -> Path:
        return self.cells_dir / f"{slide_id}.parquet"

    def counts(self, slide_id: str) -> Path:
        return self.counts_dir / f"{slide_id}.parquet"

    def geojson(self, slide_id: str) -> Path:
        return self.root / "geojson" / f"{slide_id}.geojson"

    def cell_masks(self, slide_id: str) -> Path:
        return self.root / "cell_masks" / f"{slide_id}.json"

    def thumbnail(self, slide_id: str) -> Path:
        return self.workspace / "reports" / "predict" / self.model / f"{slide_id}.png"


def dataset_predictions(version_path: Path, model: str) -> Path:
    """The ``tile_cells`` file of a model's prediction on a dataset version."""
    return version_path / PREDICTIONS_DIR / model / "cells.parquet"


def models_with_predictions(workspace: Path) -> list[str]:
    """Models with slide predictions in the workspace, the most recently written last."""
    root = workspace / PREDICTIONS_DIR
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        files = list((folder / "cells.parquet").glob("*.parquet")) if folder.is_dir() else []
        if files:
            found.append((max(f.stat().st_mtime for f in files), folder.name))
    return [name for _, name in sorted(found)]


def is_fresh(path: Path, provenance: dict[str, str], checkpoint: Path) -> bool:
    """The file exists, was made from the same things, and is not older than the checkpoint."""
    if not path.is_file() or read_provenance(path) != provenance:
        return False
    return path.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns
