"""`histocurate init`: create a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from histocurate.cli.base import app, console
from histocurate.config import load_config
from histocurate.workspace import init_workspace


@app.command()
def init(
    workspace: Annotated[Path, typer.Argument(help="Folder to create (or use) as workspace.")],
    manifest: Annotated[
        Path | None,
        typer.Option(help="Slide manifest (CSV or Parquet), relative to the workspace."),
    ] = None,
    cohort: Annotated[str | None, typer.Option(help="Default cohort name.")] = None,
) -> None:
    """Create a workspace: a folder with a histocurate.toml.

    The manifest lists the slides: columns slide_id, path, indication and optionally
    cohort and mpp (to override a slide's resolution). Paths are relative to the manifest.
    """
    overrides = {"cohort": {k: v for k, v in {"manifest": manifest, "name": cohort}.items() if v}}
    config = load_config(workspace, overrides, require_file=False)
    created = init_workspace(workspace, config)
    console.print(f"workspace ready: {created.config_file}")
