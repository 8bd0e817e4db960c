"""Prefect flow of the select stage: per-slide passes as tasks, the report as artifacts.

The algorithm is `histocurate.selection.pipeline.run_selection`; this flow only gives it a
mapper that runs each per-slide step (scan, then score) as one task per slide, and
publishes the report: the markdown text the CLI prints, its tables, and the mosaic.
Tasks get a `FeatureSource` (a workspace path and encoder names), never feature arrays.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable
from typing import Any

from prefect import flow, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from histocurate.config import load_config
from histocurate.selection.report import render_markdown, report_tables
from histocurate.selection.run import select_indication


@task(name="select-slide-step", cache_policy=NO_CACHE)
def slide_step(fn: Callable[[Any], Any], item: Any) -> Any:
    """One per-slide step of the selection (a scan or a scoring pass over one slide)."""
    return fn(item)


def task_map(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """Run ``fn`` over ``items`` as one task each, results in order."""
    futures = []
    for item in items:
        name = (
            f"select-{getattr(fn, 'func', fn).__name__.strip('_')}-{getattr(item, 'slide_id', '')}"
        )
        futures.append(slide_step.with_options(task_run_name=name).submit(fn, item))
    return [f.result() for f in futures]


@flow(name="select", log_prints=True)
def select_flow(
    workspace: str, indication: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Select tiles of ``indication``; returns the report text and the output paths."""
    config = load_config(workspace, overrides or {})
    result, paths = select_indication(config, indication, mapper=task_map)
    markdown = render_markdown(result)
    key = f"select-{indication.lower()}"
    create_markdown_artifact(
        key=f"{key}-report", markdown=markdown, description=f"Selection report, {indication}"
    )
    for name, frame in report_tables(result).items():
        if name == "cv":  # the long table stays a CSV file; its summary is model_choice
            continue
        create_table_artifact(
            key=f"{key}-{name.replace('_', '-')}",
            table=_records(frame),
            description=f"Selection {indication}: {name}",
        )
    if "mosaic" in paths:
        create_image_artifact(
            image_url=paths["mosaic"].as_uri(),
            key=f"{key}-mosaic",
            description=f"Selected tiles of {indication} (file on the workspace)",
        )
        create_markdown_artifact(
            key=f"{key}-mosaic-preview",
            markdown=_preview(paths["mosaic"]),
            description="Mosaic (frames: blue diversity, red rare, orange uncertainty)",
        )
    return {"markdown": markdown, "paths": {k: str(v) for k, v in paths.items()}}


def _records(frame: Any) -> list[dict[str, Any]]:
    """Rows as JSON-friendly dicts (missing values as None)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [{str(k): v for k, v in row.items()} for row in clean.to_dict("records")]


def _preview(path: Any, width: int = 640) -> str:
    """A small JPEG of the mosaic inlined in markdown (the UI cannot read workspace files)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.thumbnail((width, width))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"![mosaic](data:image/jpeg;base64,{data})\n"
