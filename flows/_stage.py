"""The shared flow layer: what turns a stage's run function into a Prefect flow.

A stage flow is ``@flow`` + `task_mapper` + `finish`, nothing else::

    @flow(name="tile")
    def tile_flow(workspace: str, overrides: dict | None = None, force: bool = False):
        config = load_config(workspace, overrides)
        run = run_tile(config, mapper=task_mapper("tile"), force=force)
        return finish(run, key="tile")

`task_mapper` runs each item of the stage as one Prefect task named after the item;
`finish` publishes the run's `Report` (the same one the CLI prints) as artifacts and ends
the flow Failed when items failed, with the failures in the state message. `run_flow`
calls a flow in-process and gives back the run object whatever the final state.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from histocurate.runs import ItemWork, Mapper, Report, StageRun, rounded


@task(name="item", cache_policy=NO_CACHE)
def _run_item(fn: Callable[[Any], Any], item: Any) -> Any:
    """One item of a stage (a slide, a batch of tiles, a shard)."""
    return fn(item)


def _item_name(fn: Callable[[Any], Any], item: Any) -> str:
    if isinstance(fn, ItemWork):
        return f"{fn.stage}-{fn.name_of(item)}"
    inner = getattr(fn, "func", fn)
    step = getattr(inner, "__name__", "step").strip("_")
    return f"{step}-{getattr(item, 'slide_id', None) or item}"


def task_mapper(stage: str) -> Mapper:
    """A mapper that runs each item as a task named ``<stage>-<item>``, results in order.

    For an `ItemWork` the task runs the bare work, so a failure shows as a failed task with
    its traceback in the UI; the mapper then turns it into the item's failed outcome, and
    the other items go on, as they do on the CLI.
    """

    def mapper(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        work = fn.fn if isinstance(fn, ItemWork) else fn
        futures = [
            _run_item.with_options(task_run_name=_item_name(fn, item)).submit(work, item)
            for item in items
        ]
        for item, future in zip(items, futures, strict=True):
            if isinstance(fn, ItemWork):
                try:
                    yield future.result()
                except Exception as exc:
                    yield fn.failure(item, exc)
            else:
                yield future.result()

    mapper.__name__ = f"{stage}_task_mapper"
    return mapper


def artifact_key(text: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from any text."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _records(frame: Any) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [{str(k): rounded(v) for k, v in row.items()} for row in clean.to_dict("records")]


def inline_image(path: Path, *, width: int = 720) -> str:
    """A picture inlined in markdown as a small JPEG (the UI cannot read workspace files)."""
    from PIL import Image

    with Image.open(path) as image:
        picture = image.convert("RGB")
    picture.thumbnail((width, width))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=75)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"![{path.stem}](data:image/jpeg;base64,{data})"


def publish(report: Report, *, key: str, max_images: int = 6) -> None:
    """The report as the run's artifacts: markdown (with its pictures inline) and tables."""
    markdown = report.to_markdown()
    shown = [p for p in report.images if Path(p).exists()][:max_images]
    if shown:
        markdown += "\n## Pictures\n\n" + "\n\n".join(inline_image(Path(p)) for p in shown)
        if len(report.images) > len(shown):
            markdown += f"\n\n_{len(report.images) - len(shown)} more in the workspace_"
    create_markdown_artifact(key=artifact_key(f"{key}-report"), markdown=markdown, description=report.title)
    tables = ([("items", report.table)] if report.table is not None else []) + list(
        report.tables.items()
    )
    for name, frame in tables:
        if frame is None or frame.empty:
            continue
        create_table_artifact(
            key=artifact_key(f"{key}-{name}"),
            table=_records(frame),
            description=f"{report.title}: {name}",
        )


def finish(run: StageRun, *, key: str) -> StageRun | State:
    """Publish the run; end the flow Failed (run attached) when some items failed."""
    publish(run.report(), key=key)
    if run.failed:
        listed = "; ".join(run.failure_lines()[:5])
        more = f" (and {len(run.failed) - 5} more)" if len(run.failed) > 5 else ""
        return Failed(message=f"{len(run.failed)} item(s) failed: {listed}{more}", data=run)
    return run


def run_flow(flow_fn: Any, /, **parameters: Any) -> Any:
    """Call a flow in-process; return its run object even when the flow ended Failed
    because of failed items; re-raise an error that stopped the flow itself."""
    state = flow_fn(**parameters, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return data
