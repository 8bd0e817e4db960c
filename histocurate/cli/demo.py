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
    if not (workspace / "histocurate.toml").exists():
        created = init_demo_workspace(workspace, n_tiles=n_tiles, n_uncertain=n_uncertain)
        console.print(f"workspace ready: {created}")
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


def init_demo_workspace(workspace: Path, *, n_tiles: int, n_uncertain: int) -> Path:
    """A new workspace whose selection sizes are the demo's: a deployment run on it with
    its parameters left empty (they keep the workspace's settings) then asks for what the
    demo's small cohort holds, not the default 50 + 50 tiles. Returns the config file.

    >>> import tempfile
    >>> from histocurate.config import load_config
    >>> root = Path(tempfile.mkdtemp()) / "ws"
    >>> _ = init_demo_workspace(root, n_tiles=12, n_uncertain=10)
    >>> load_config(root).selection.n_tiles, load_config(root).selection.n_uncertain
    (12, 10)
    """
    from histocurate.config import load_config
    from histocurate.workspace import init_workspace

    root = workspace.expanduser().resolve()
    sizes = {"selection": {"n_tiles": n_tiles, "n_uncertain": n_uncertain}}
    return init_workspace(root, load_config(root, sizes, require_file=False)).config_file
