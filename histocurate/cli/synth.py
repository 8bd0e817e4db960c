"""`histocurate synth`: generate the built-in synthetic cohort and its manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from histocurate.cli.base import WorkspaceOption, app, config_for, console, progress_bar
from histocurate.digest import sha256_hex
from histocurate.errors import UserInputError
from histocurate.io import atomic_write_text
from histocurate.workspace import Workspace

OWNER_FILE = "manifest.sha256"  # in Workspace.synthetic: hash of the manifest synth wrote


def parse_size(text: str) -> tuple[int, int]:
    """``4096`` or ``4096x3072`` (width x height, level-0 px)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 512:
        raise UserInputError(f"--size {text!r}: give N or WxH in pixels, each at least 512")
    return (values[0], values[-1])


def _digest(path: Path) -> str:
    return sha256_hex(path.read_bytes())


def check_manifest_owner(manifest: Path, owner_file: Path, *, force: bool) -> None:
    """Refuse to overwrite a manifest that `histocurate synth` did not write (unless force)."""
    if force or not manifest.exists():
        return
    ours = owner_file.is_file() and owner_file.read_text().strip() == _digest(manifest)
    if not ours:
        raise UserInputError(
            f"{manifest} exists and was not written by `histocurate synth`; refusing to "
            "overwrite it. Set cohort.manifest in histocurate.toml to another file, or "
            "pass --force to replace it."
        )


@app.command()
def synth(
    workspace: WorkspaceOption = Path("."),
    slides_per_indication: Annotated[
        int | None, typer.Option(min=1, help="Slides per indication (config: 2).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Slide size in px: N or WxH (config: 4096).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (config: 0).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes rendering slides.")] = min(
        2, os.cpu_count() or 1
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Regenerate slides; overwrite any manifest.")
    ] = False,
) -> None:
    """Generate the synthetic cohort (slides + ground truth) and write its manifest.

    Slides go to <workspace>/synthetic/slides, truth to synthetic/truth.parquet, the
    manifest to the path [cohort] manifest of histocurate.toml. Slides already made with
    the same settings are kept.
    """
    width, height = parse_size(size) if size else (None, None)
    overrides = {
        "synth": {
            "slides_per_indication": slides_per_indication,
            "width_px": width,
            "height_px": height,
            "seed": seed,
        }
    }
    config = config_for(workspace, overrides)
    cfg = config.synth
    ws = Workspace.of(config)
    manifest = config.resolve(config.cohort.manifest)
    owner = ws.synthetic / OWNER_FILE
    check_manifest_owner(manifest, owner, force=force)
    from histocurate.synth import generate_cohort, write_manifest

    total = len(cfg.indications) * cfg.slides_per_indication
    with progress_bar() as progress:
        task = progress.add_task("synthetic slides", total=total)
        slides = generate_cohort(
            ws.synthetic,
            indications=cfg.indications,
            slides_per_indication=cfg.slides_per_indication,
            width_px=cfg.width_px,
            height_px=cfg.height_px,
            mpp=cfg.mpp,
            seed=cfg.seed,
            force=force,
            workers=workers,
            on_slide=lambda record: progress.advance(task),
        )
    write_manifest(slides, manifest)
    atomic_write_text(owner, _digest(manifest) + "\n")
    table = Table("slide", "cohort", "nuclei", title="synthetic cohort")
    for s in slides:
        table.add_row(s.slide_id, s.cohort, str(s.n_nuclei))
    console.print(table)
    console.print(f"{len(slides)} slides under {ws.synthetic}; manifest {manifest}")
