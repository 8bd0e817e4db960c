"""What every command shares: the typer app, the workspace option, progress, Prefect choice.

Commands only wire: they read options, load the config, and call the stage's functions
(or its Prefect flow). No algorithm lives in the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from histocurate.config import HistocurateConfig, load_config

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


def exit_for_outcomes(outcomes: Iterable[Any]) -> None:
    """Exit 2 when some items failed for bad input, 1 when some failed otherwise, else return.

    ``outcomes`` are per-slide (or per-shard) results with ``status``, ``input_error`` and a
    ``__str__`` that names the item and its error.
    """
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return
    for item in failed:
        err_console.print(Text("failed ", style="red") + Text(str(item)), soft_wrap=True)
    err_console.print(f"[bold red]{len(failed)} item(s) failed[/]; the others were written")
    raise typer.Exit(code=1 if any(not o.input_error for o in failed) else 2)
