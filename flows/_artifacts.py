"""A run's report and progress as Prefect artifacts that read well in the UI.

- `publish`: the `Report` (the same one the CLI prints) as one markdown artifact, with its
  pictures inlined as small JPEG data URIs (the UI cannot read workspace files, and an
  image artifact is only a URL), and its tables as table artifacts with floats rounded.
- `ArtifactProgress`: the stage contract's `Progress` as a progress artifact, updated as
  items finish (one artifact per pass of a stage, under one key).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import time
from numbers import Number
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from histocurate.runs import Report

log = logging.getLogger(__name__)


def artifact_key(text: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from any text.

    >>> artifact_key("Select LUAD / report")
    'select-luad-report'
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cell(value: Any, digits: int = 3) -> Any:
    """A table value as the UI shows it: numbers as plain Python values, floats rounded to
    ``digits`` decimals (large ones to integers), NaN and missing as empty.

    >>> import numpy as np
    >>> cell(0.9596984633227023), cell(np.float32(0.25), 1), cell(float("nan")), cell(np.int64(3))
    (0.96, 0.2, None, 3)
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Number) and hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return round(value, digits) if abs(value) < 1e6 else round(value)
    if isinstance(value, (str, int, bool)):
        return value
    return str(value)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as the rows of a table artifact (JSON values, floats rounded)."""
    return [
        {str(k): cell(v) for k, v in zip(frame.columns, row, strict=True)}
        for row in frame.astype(object).itertuples(index=False)
    ]


def inline_image(path: Path, *, width: int = 720) -> str:
    """A picture inlined in markdown as a small JPEG data URI."""
    from PIL import Image

    with Image.open(path) as image:
        picture = image.convert("RGB")
    picture.thumbnail((width, width))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=75)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"![{path.stem}](data:image/jpeg;base64,{data})"


def report_markdown(report: Report, *, max_images: int = 6) -> str:
    """The report as markdown with at most ``max_images`` of its pictures inline, right
    after its summary (before the long tables: what a reviewer looks at first)."""
    markdown = report.to_markdown()
    shown = [Path(p) for p in report.images if Path(p).is_file()][:max_images]
    if not shown:
        return markdown
    pictures = "\n\n".join(f"**{p.stem}**\n\n{inline_image(p)}" for p in shown)
    if len(report.images) > len(shown):
        pictures += f"\n\n_{len(report.images) - len(shown)} more in the workspace_"
    section = f"## Pictures\n\n{pictures}\n\n"
    at = markdown.find("\n## ")
    if at < 0:
        return f"{markdown}\n{section}"
    return f"{markdown[: at + 1]}{section}{markdown[at + 1 :]}"


def publish(report: Report, *, key: str, max_images: int = 6) -> None:
    """The report as the run's artifacts: markdown (pictures inline) and tables."""
    create_markdown_artifact(
        key=artifact_key(f"{key}-report"),
        markdown=report_markdown(report, max_images=max_images),
        description=report.title,
    )
    tables = ([("items", report.table)] if report.table is not None else []) + list(
        report.tables.items()
    )
    for name, frame in tables:
        if frame is None or frame.empty:
            continue
        create_table_artifact(
            key=artifact_key(f"{key}-{name}"),
            table=records(frame),
            description=f"{report.title}: {name}",
        )


class ArtifactProgress:
    """`histocurate.runs.Progress` as a Prefect progress artifact (key ``<key>-progress``).

    Each pass of a stage (``start``) makes a new artifact under the key, labelled with the
    pass; ``advance`` updates it at most every ``every_s`` seconds, and always at the end.
    A failure to reach the API is logged and otherwise ignored: progress is never worth
    failing a stage for.
    """

    def __init__(self, key: str, *, every_s: float = 2.0) -> None:
        self.key = artifact_key(f"{key}-progress")
        self.every_s = every_s
        self._id: UUID | None = None
        self._total = 0
        self._done = 0
        self._description = ""
        self._last = 0.0

    def start(self, total: int, description: str) -> None:
        self._total, self._done, self._description = total, 0, description
        self._last = time.monotonic()
        try:
            self._id = create_progress_artifact(  # type: ignore[assignment]
                progress=100.0 if total == 0 else 0.0,
                key=self.key,
                description=f"{description}: 0 of {total}",
            )
        except Exception as exc:
            log.warning("progress artifact not created: %s", exc)
            self._id = None

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        finished = self._done >= self._total
        if self._id is None or (not finished and now - self._last < self.every_s):
            return
        self._last = now
        percent = 100.0 * self._done / self._total if self._total else 100.0
        try:
            update_progress_artifact(
                artifact_id=self._id,
                progress=min(100.0, percent),
                description=f"{self._description}: {self._done} of {self._total}",
            )
        except Exception as exc:
            log.warning("progress artifact not updated: %s", exc)
