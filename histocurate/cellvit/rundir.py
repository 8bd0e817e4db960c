"""A training run's folder, ``runs/<run>/``, and what the loop writes there.

- ``config.json``: the settings, the dataset (name, version, content hash, folds), the
  classes, the input size and the versions of the libraries (written once, at the start);
- ``last.pt``: the model checkpoint (`histocurate.cellvit.load_checkpoint` reads it) plus
  the training state (optimiser, loss scaler, scheduler, sampler position, epoch, step,
  images, seconds, best bPQ), rewritten after every epoch: a killed run loses at most one;
- ``best.pt``: the checkpoint of the best validation bPQ, with that validation's metrics;
- ``metrics.parquet``: per step and per validation (table ``train_metrics``);
- ``curves.png``: loss and validation curves;
- ``nan.pt``: written only when the loss became NaN (the weights before that step).

Every file is written atomically (temporary file + rename): a crash leaves the previous
version whole.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from data_schema.train_metrics import TRAIN_METRICS
from histocurate.cellvit.checkpoint import checkpoint_payload as payload_of
from histocurate.errors import UserInputError
from histocurate.io import read_table, write_table
from histocurate.io.atomic import atomic_write_text
from histocurate.torchutil import atomic_save

CONFIG_FILE, LAST, BEST, NAN = "config.json", "last.pt", "best.pt", "nan.pt"
METRICS, CURVES = "metrics.parquet", "curves.png"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its model besides the weights."""

    classes: tuple[str, ...]
    mpp: float | None
    colours: tuple[str, ...] = ()
    train_config: Mapping[str, Any] = field(default_factory=dict)


def checkpoint_payload(model: torch.nn.Module, meta: CheckpointMeta) -> dict[str, Any]:
    """Our checkpoint dict (`histocurate.cellvit.checkpoint.checkpoint_payload`)."""
    return payload_of(model, classes=meta.classes, mpp=meta.mpp, colours=meta.colours,
                      train_config=meta.train_config)  # fmt: skip


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor copied to the CPU (optimiser states live on the device and
    change in place at the next step)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def read_state(path: Path) -> dict[str, Any]:
    """A ``last.pt`` / ``best.pt`` / ``nan.pt`` as a dict (error naming the file)."""
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (the run has not saved it yet)")
    try:
        found = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserInputError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(found, dict) or "training" not in found:
        raise UserInputError(f"{path}: not a training checkpoint of histocurate")
    return found


class RunDir:
    """The files of one run (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self._writer: threading.Thread | None = None  # the checkpoint being written
        self._error: BaseException | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    def exists(self) -> bool:
        return self.config_path.is_file()

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, json.dumps(config, indent=2, default=str) + "\n")

    def read_config(self) -> dict[str, Any]:
        try:
            found = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"{self.config_path}: not a run's config ({exc})") from None
        if not isinstance(found, dict):
            raise UserInputError(f"{self.config_path}: not a run's config")
        return found

    def save(
        self,
        name: str,
        model: torch.nn.Module,
        meta: CheckpointMeta,
        training: Mapping[str, Any],
        *,
        wait: bool = False,
    ) -> Path:
        """Write checkpoint ``name`` with the training state, atomically, in a background
        thread (the state is copied to the CPU first, so training goes on meanwhile: the
        paper model's last.pt with Adam's moments is ~1.7 GB); ``wait`` blocks until done.
        One write at a time, in order; a write's error is raised by the next `wait`."""
        payload = checkpoint_payload(model, meta)
        payload["training"] = to_cpu(dict(training))
        path = self.path / name
        self.wait()

        def write() -> None:
            try:
                atomic_save(payload, path)
            except BaseException as exc:  # handed to the thread that waits
                self._error = exc

        self._writer = threading.Thread(target=write, name=f"save-{name}")
        self._writer.start()
        if wait:
            self.wait()
        return path

    def wait(self) -> None:
        """Until the last `save` is on disk (its error, if any, raised here)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class MetricsLog:
    """The rows of ``metrics.parquet``, kept in memory and written whole by `flush`."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.rows: list[dict[str, Any]] = []

    def resume(self, upto_step: int) -> None:
        """Keep the rows of steps up to ``upto_step`` (the checkpoint the run resumes)."""
        if not self.run.metrics_path.exists():
            return
        frame = read_table(self.run.metrics_path, TRAIN_METRICS)
        kept = frame[frame["step"] <= upto_step]
        records = kept.astype(object).where(kept.notna(), None).to_dict("records")
        self.rows = [{str(k): v for k, v in row.items()} for row in records]

    def add(
        self,
        kind: str,
        *,
        epoch: int,
        step: int,
        images: int,
        seconds: float,
        values: Mapping[str, float],
    ) -> None:
        for metric, value in values.items():
            number = float(value)
            self.rows.append(
                {
                    "run": self.run.name,
                    "kind": kind,
                    "epoch": epoch,
                    "step": step,
                    "images": images,
                    "seconds": seconds,
                    "metric": metric,
                    "value": None if math.isnan(number) else number,
                }
            )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=TRAIN_METRICS.column_names)

    def flush(self) -> Path:
        return write_table(self.frame(), self.run.metrics_path, TRAIN_METRICS)


def validation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per validation (epoch, step, then one column per metric)."""
    rows = frame[frame["kind"] == "validation"]
    if rows.empty:
        return pd.DataFrame(columns=["epoch", "step"])
    last = rows.drop_duplicates(["epoch", "step", "metric"], keep="last")
    wide = last.pivot(index=["epoch", "step"], columns="metric", values="value")  # NaN kept
    first = [c for c in ("bpq", "dq", "sq", "f1_detection", "mf1") if c in wide.columns]
    wide = wide[first + [c for c in wide.columns if c not in first]]
    return wide.reset_index().rename_axis(columns=None)


def plot_curves(
    frame: pd.DataFrame, path: Path, *, shown: Sequence[str] = ("bpq", "dq", "sq", "mf1")
) -> Path:
    """Training loss per step (and its running mean) beside the validation metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histocurate.io.atomic import atomic_path

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    loss = frame[(frame["kind"] == "train") & (frame["metric"] == "loss")]
    if len(loss):
        left.plot(loss["step"], loss["value"], lw=0.5, alpha=0.4, label="loss per step")
        window = max(1, len(loss) // 30)
        left.plot(
            loss["step"],
            loss["value"].rolling(window, min_periods=1).mean(),
            label=f"running mean ({window} steps)",
        )
        left.legend()
    left.set(xlabel="step", ylabel="loss", title="training loss")
    val = validation_table(frame)
    for name in shown:
        if name in val.columns:
            right.plot(val["epoch"] + 1, val[name], marker="o", label=name)
    right.set(xlabel="epoch", ylabel="score", title="validation (held-out fold)", ylim=(0, 1))
    if len(val):
        right.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
