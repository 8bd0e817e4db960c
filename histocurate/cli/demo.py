"""`histocurate demo`: the whole pipeline on the built-in synthetic cohort (see
`histocurate.demo.runner` for the steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from histocurate.cli.base import PrefectOption, app, console


@app.command()
def demo(
    workspace: Annotated[Path, typer.Argument(help="Workspace to create or resume.")] = Path(
        "demo-workspace"
    ),
    indication: Annotated[str, typer.Option(help="Indication to select tiles from.")] = "LUAD",
    n_tiles: Annotated[
        int, typer.Option(min=1, help="Tiles drawn from the diversity + rare pool (N0).")
    ] = 12,
    n_uncertain: Annotated[
        int, typer.Option(min=0, help="Tiles drawn from the uncertainty pool, at most.")
    ] = 10,
    annotators_per_tile: Annotated[
        int, typer.Option(min=2, help="Simulated pathologists per tile (of 9).")
    ] = 3,
    segmenter: Annotated[
        str, typer.Option(help="watershed (no weights) or nuclick (needs --checkpoint).")
    ] = "watershed",
    checkpoint: Annotated[Path | None, typer.Option(help="NuClick weights.")] = None,
    train_minutes: Annotated[
        float, typer.Option(min=0.05, help="Time budget of the tiny CellViT's training.")
    ] = 1.0,
    prefect: PrefectOption = None,
) -> None:
    """Run the whole pipeline on the built-in synthetic cohort, in WORKSPACE."""
    from histocurate.cli.app import main
    from histocurate.demo.runner import DemoOptions, StepFailed, check_segmenter, run_demo

    options = DemoOptions(
        workspace,
        indication,
        n_tiles,
        n_uncertain,
        annotators_per_tile,
        segmenter,
        checkpoint,
        prefect,
        train_minutes=train_minutes,
    )
    if not (workspace / "histocurate.toml").exists() and main(["init", str(workspace)]) != 0:
        raise typer.Exit(1)
    check_segmenter(workspace, segmenter, checkpoint)
    try:
        timings = run_demo(options)
    except StepFailed as exc:  # the command has said why; say where the demo stopped
        console.print(
            Text(f"demo stopped at step {exc.step!r}", style="bold red")
            + Text(f": {exc}. Fix what it says and run the demo again: the steps already ")
            + Text("done are kept.")
        )
        raise typer.Exit(exc.code) from None
    table = Table("step", "seconds", title=f"demo finished in {workspace}")
    for name, seconds in timings:
        table.add_row(name, f"{seconds:.1f}")
    console.print(table)
