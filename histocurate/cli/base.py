"""What every command shares: the typer app, the workspace option, progress, Prefect choice.

Commands only wire: they read options, load the config, and call the stage's functions
(or its Prefect flow). No algorithm lives in the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from histocurate.config import HistocurateConfig, load_config
from histocurate.runs import Report, StageRun, rounded

app = typer.Typer(
    name="histocurate",
    help="Curate a multi-pathologist nuclei dataset from H&E whole-slide images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=False)
err_console = Console(stderr=True)

T = TypeVar("T")
R = TypeVar("R")

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        envvar="HISTOCURATE_WORKSPACE",
        help="Workspace folder (holds histocurate.toml).",
        show_default=True,
    ),
]
ProjectOption = Annotated[
    str | None,
    typer.Option(
        help="Campaign (Cytomine project name). Default: [cytomine] project, else the only "
        "campaign with imported clicks."
    ),
]
PrefectOption = Annotated[
    bool | None,
    typer.Option(
        "--prefect/--no-prefect",
        help="Run through the stage's Prefect flow (recorded in the UI). "
        "Default: yes when PREFECT_API_URL is set.",
        show_default=False,
    ),
]


def flag_overrides(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """CLI flags as configuration overrides, ready for `load_config` and flow parameters.

    Flags left unset (None) are dropped, so they do not override the file or environment;
    paths become strings, since flow parameters must be JSON; empty sections are dropped.
    """
    cleaned = {
        section: {
            k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None
        }
        for section, values in sections.items()
    }
    return {section: values for section, values in cleaned.items() if values}


def config_for(workspace: Path, overrides: dict[str, Any] | None = None) -> HistocurateConfig:
    """Load the workspace's configuration with CLI flag overrides (unset flags dropped)."""
    return load_config(workspace, flag_overrides(overrides or {}))


def use_prefect(flag: bool | None) -> bool:
    """Run through Prefect when asked, or by default when a Prefect API is configured.

    Without an API every flow would start a throw-away local server (15-25 s here), so the
    plain functions run instead; the results are the same.
    """
    return flag if flag is not None else bool(os.environ.get("PREFECT_API_URL"))


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def track(items: Iterable[T], *, total: int, description: str) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr."""
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


class RichProgress:
    """A stage's `histocurate.runs.Progress` as a rich bar on stderr (use as a context)."""

    def __init__(self) -> None:
        self._bar = progress_bar()
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, total: int, description: str) -> None:
        if self._task is None:
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()
        else:  # a stage with several passes: one bar per pass
            self._bar.update(self._task, completed=self._bar.tasks[0].total)
            self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)


def rich_table(frame: pd.DataFrame, *, title: str | None = None) -> Table:
    """A frame as a rich table (floats rounded as in the Prefect artifacts)."""
    table = Table(*map(str, frame.columns), title=title)
    for row in frame.itertuples(index=False):
        table.add_row(*("" if (v := rounded(x)) is None else str(v) for x in row))
    return table


def print_report(report: Report, *, item_rows: int = 60) -> None:
    """A run's report in the terminal: the same content as its Prefect artifacts."""
    if report.table is not None and not report.table.empty:
        shown = report.table.head(item_rows)
        console.print(rich_table(shown, title=report.title))
        if len(report.table) > item_rows:
            console.print(f"({len(report.table) - item_rows} more rows in the Prefect report)")
    if report.body:
        console.print(report.body, markup=False, highlight=False, soft_wrap=True)
    for name, frame in ({} if report.body else report.tables).items():
        console.print(rich_table(frame, title=name))
    for line in report.summary:
        console.print(Text(line), soft_wrap=True)
    for name, path in report.outputs.items():
        console.print(Text(f"{name + ':':10} {path}"), soft_wrap=True)
    for warning in report.warnings:
        err_console.print(Text("warning ", style="yellow") + Text(warning), soft_wrap=True)


def failure_summary(run: StageRun, *, unit: str = "item", nothing: str = "none was written") -> str:
    """The last line of a run where some items failed: how many, and what became of the
    others from the run's outcomes (written, up to date), or ``nothing`` when every item
    failed. ``unit`` names one item (``slide``).

    >>> from histocurate.runs import ItemOutcome
    >>> run = StageRun([ItemOutcome("a", "failed"), ItemOutcome("b", "skipped")])
    >>> failure_summary(run)
    '1 item(s) failed; of the others 1 up to date (not redone)'
    >>> failure_summary(StageRun([ItemOutcome("a", "failed")]), unit="slide")
    'every slide (1) failed; none was written'
    """
    failed = len(run.failed)
    if failed == len(run.outcomes):
        return f"every {unit} ({failed}) failed; {nothing}"
    kept = [f"{len(run.done)} written"] if run.done else []
    if run.skipped:
        kept.append(f"{len(run.skipped)} up to date (not redone)")
    return f"{failed} {unit}(s) failed; of the others {' and '.join(kept)}"


def finish_run(run: StageRun, summary: Callable[[Any], str] = failure_summary) -> None:
    """Print a run's report; with failures, name them, say what became of the others
    (``summary``: `failure_summary`, or a stage's own wording of it) and exit with the run's
    code (2: every failure is the input's, 1: some are not; `StageRun.exit_code`)."""
    print_report(run.report())
    code = run.exit_code
    if code:
        for item in run.failed:
            err_console.print(Text("failed ", style="red") + Text(str(item)), soft_wrap=True)
        err_console.print(Text(summary(run), style="bold red"), soft_wrap=True)
        raise typer.Exit(code=code)


def run_stage(
    flow_name: str, prefect: bool | None, local: Callable[[RichProgress], R], **parameters: Any
) -> R:
    """Run a stage through its Prefect flow (``flows.<module>:<flow>``) or in this process.

    ``local(progress)`` is the plain call (``run_<stage>(config, progress=progress)``); the
    flow gets ``parameters``. Both give the same run object.
    """
    if use_prefect(prefect):
        import importlib

        from flows._stage import run_flow

        module, name = flow_name.split(":")
        flow = getattr(importlib.import_module(f"flows.{module}"), name)
        return run_flow(flow, **parameters)
    with RichProgress() as progress:
        return local(progress)
