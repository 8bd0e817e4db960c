"""`histocurate init`: create a workspace (and check its manifest, when one is given)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from histocurate.cli.base import app, console, err_console
from histocurate.config import load_config
from histocurate.errors import UserInputError
from histocurate.manifest import missing_slide_files, read_manifest
from histocurate.workspace import init_workspace


def _recorded(manifest: Path, workspace: Path) -> Path:
    """The manifest as the config records it: relative to the workspace when inside it."""
    try:
        return manifest.relative_to(workspace)
    except ValueError:
        return manifest


@app.command()
def init(
    workspace_arg: Annotated[
        Path | None, typer.Argument(metavar="[WORKSPACE]", help="Folder to create or use.")
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="Folder to create or use (same as WORKSPACE)."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="Slide manifest (CSV or Parquet), as a path from where you type."),
    ] = None,
    cohort: Annotated[str | None, typer.Option(help="Default cohort name.")] = None,
) -> None:
    """Create a workspace: a folder with a histocurate.toml.

    The manifest lists the slides: columns slide_id, path, indication and optionally
    cohort and mpp (to override a slide's resolution). Paths in it are relative to the
    manifest. A manifest given here is checked now: a bad one is refused (nothing written),
    slides whose file does not exist yet are listed as a warning.
    """
    if workspace_arg is not None and workspace is not None and workspace_arg != workspace:
        raise UserInputError(f"two workspaces given ({workspace_arg} and {workspace}): give one")
    chosen = workspace_arg or workspace or Path(os.environ.get("HISTOCURATE_WORKSPACE", "."))
    root = chosen.expanduser().resolve()
    section: dict[str, object] = {"name": cohort} if cohort else {}
    if manifest is not None:
        found = manifest.expanduser().resolve()  # from where it was typed, not the workspace
        section["manifest"] = str(_recorded(found, root))
    config = load_config(root, {"cohort": section}, require_file=False)
    if manifest is not None:
        slides = read_manifest(
            config.resolve(config.cohort.manifest),
            indications=config.cohort.indications,
            default_cohort=config.cohort.name,
        )
        for line in missing_slide_files(slides):
            err_console.print(Text("warning ", style="yellow") + Text(line), soft_wrap=True)
    created = init_workspace(root, config)
    console.print(f"workspace ready: {created.config_file}")
    if manifest is not None:
        console.print(f"manifest: {config.resolve(config.cohort.manifest)} ({len(slides)} slides)")
