"""`histocurate dataset ...`: curated datasets (build, list, show, import, export)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    console,
    finish_run,
    flag_overrides,
    rich_table,
    run_stage,
)

if TYPE_CHECKING:
    from histocurate.cli.base import RichProgress
    from histocurate.dataset.run import DatasetRun

dataset_app = typer.Typer(
    name="dataset",
    help="Curated datasets: build from a campaign, list, show, import, export.",
    no_args_is_help=True,
)
app.add_typer(dataset_app, name="dataset")


class SourceChoice(StrEnum):
    consensus = "consensus"
    masks = "masks"


class ImportFormat(StrEnum):
    pannuke = "pannuke"
    consep = "consep"
    lizard = "lizard"


class ExportFormat(StrEnum):
    pannuke = "pannuke"
    cellvit = "cellvit"
    geojson = "geojson"


class ExportClasses(StrEnum):
    dataset = "dataset"
    pannuke = "pannuke"


CampaignOption = Annotated[
    str | None,
    typer.Option(
        "--project",
        "--campaign",
        help="Campaign (Cytomine project name). Default: [cytomine] project, else the only "
        "campaign exported.",
    ),
]
FoldsOption = Annotated[int | None, typer.Option(help="Folds, grouped by slide (3).")]
SeedOption = Annotated[int | None, typer.Option(help="Seed of the folds (111).")]
MppOption = Annotated[float | None, typer.Option(help="Resolution of the dataset, um/px (0.25).")]
WorkersOption = Annotated[
    int | None, typer.Option(help="Processes building tiles (1; Prefect: its tasks).")
]


@dataset_app.command("build")
def build(
    name: Annotated[str, typer.Option("--name", help="Dataset name (datasets/<name>/).")],
    workspace: WorkspaceOption = Path("."),
    source: Annotated[
        SourceChoice | None,
        typer.Option(help="consensus (validation sets) or masks (one annotator per tile)."),
    ] = None,
    project: CampaignOption = None,
    folds: FoldsOption = None,
    seed: SeedOption = None,
    mpp: MppOption = None,
    workers: WorkersOption = None,
    prefect: PrefectOption = None,
) -> None:
    """A campaign's annotations as a dataset version: datasets/<name>/<version>/ (tiles,
    nuclei, dataset.json, card). Same inputs, same version: a re-run is a no-op."""
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.run import parallel_mapper

    section = {
        "source": source.value if source else None,
        "folds": folds,
        "seed": seed,
        "mpp": mpp,
        "workers": workers,
    }
    overrides = flag_overrides({"dataset": section})
    config = config_for(workspace, overrides)

    def local(progress: RichProgress) -> DatasetRun:
        with parallel_mapper(config.dataset.workers) as mapper:
            return run_dataset_build(
                config,
                name=name,
                project=project,
                mapper=mapper,
                progress=progress,
            )

    run = run_stage(
        "dataset:dataset_flow",
        prefect,
        local,
        workspace=str(config.workspace),
        name=name,
        project=project,
        overrides=overrides,
    )
    finish_run(run)


@dataset_app.command("list")
def list_command(workspace: WorkspaceOption = Path(".")) -> None:
    """Every dataset version of the workspace: size, counts, classes, when it was built."""
    import pandas as pd

    from histocurate.dataset.store import datasets_root, list_datasets

    config = config_for(workspace)
    versions = list_datasets(datasets_root(config.workspace))
    if not versions:
        console.print("no dataset yet; build one with `histocurate dataset build --name NAME`")
        return
    latest = {v.name: v.version for v in versions}
    rows = []
    for v in versions:
        info = v.info()
        counts = info.get("counts", {})
        rows.append(
            {
                "dataset": v.name,
                "version": v.version,
                "latest": "*" if latest[v.name] == v.version else "",
                "created": info.get("created_at"),
                "source": info.get("source"),
                "tiles": counts.get("tiles"),
                "nuclei": counts.get("nuclei"),
                "classes": len(info.get("classes", [])),
                "folds": info.get("folds", {}).get("n"),
                "MB": round(v.size_bytes() / 1e6, 1),
            }
        )
    console.print(rich_table(pd.DataFrame(rows), title="datasets"))


@dataset_app.command("show")
def show(
    spec: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (a version prefix works).")],
    workspace: WorkspaceOption = Path("."),
    card: Annotated[bool, typer.Option("--card", help="Print the whole dataset card.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Recompute the content hash of the tables.")
    ] = False,
) -> None:
    """One version: counts, class table per fold, where its files are."""
    from histocurate.dataset.card import class_frame
    from histocurate.dataset.store import datasets_root, file_digest, resolve_dataset

    config = config_for(workspace)
    version = resolve_dataset(datasets_root(config.workspace), spec)
    info = version.info()
    counts = info["counts"]
    console.print(Text(f"{version.spec}  ({version.path})", style="bold"))
    console.print(
        f"created {info.get('created_at')}, source {info.get('source')}, "
        f"{counts['tiles']} tiles, {counts['nuclei']} nuclei ({counts['undetermined']} "
        f"undetermined), {counts['slides']} slides, {info.get('mpp')} um/px, "
        f"{round(version.size_bytes() / 1e6, 1)} MB"
    )
    table = class_frame(info, "per_fold").reset_index(names="cell type")
    console.print(rich_table(table, title="nuclei per class and fold"))
    if verify:
        found = file_digest([version.tiles, version.nuclei])
        ok = found == info.get("content_hash")
        console.print("content hash: " + ("ok" if ok else f"MISMATCH ({found[:16]})"))
        if not ok:
            raise typer.Exit(code=1)
    if card:
        console.print(version.card.read_text(encoding="utf-8"), markup=False, highlight=False)


@dataset_app.command("import")
def import_command(
    fmt: Annotated[ImportFormat, typer.Argument(metavar="FORMAT", help="pannuke|consep|lizard")],
    directory: Annotated[Path, typer.Argument(help="The dataset's folder.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name (datasets/<name>/).")],
    workspace: WorkspaceOption = Path("."),
    mpp: MppOption = None,
    source_mpp: Annotated[
        float | None,
        typer.Option(help="Resolution of the files, um/px (PanNuke/CoNSeP 0.25, Lizard 0.5)."),
    ] = None,
    folds: FoldsOption = None,
    seed: SeedOption = None,
    workers: WorkersOption = None,
) -> None:
    """A public dataset (PanNuke folds, CoNSeP or Lizard .mat files) as a dataset version;
    official folds kept where the format has them."""
    from histocurate.cli.base import RichProgress
    from histocurate.dataset.formats import run_dataset_import
    from histocurate.dataset.run import parallel_mapper

    section = {"folds": folds, "seed": seed, "mpp": mpp, "workers": workers}
    config = config_for(workspace, {"dataset": section})
    with parallel_mapper(config.dataset.workers) as mapper, RichProgress() as progress:
        run = run_dataset_import(
            config,
            fmt.value,
            directory.resolve(),
            name=name,
            mpp=mpp,
            source_mpp=source_mpp,
            mapper=mapper,
            progress=progress,
        )
    finish_run(run)


@dataset_app.command("export")
def export_command(
    spec: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
    directory: Annotated[Path, typer.Argument(help="Folder to write (new or empty).")],
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="pannuke (the official download's numpy folds), cellvit (the folders "
            "CellViT's training loader reads) or geojson (QuPath, one file per tile).",
        ),
    ],
    classes: Annotated[
        ExportClasses,
        typer.Option(
            help="cellvit only: the dataset's own classes, or PanNuke's five (CellViT's "
            "PanNuke configs and cell-based sampling)."
        ),
    ] = ExportClasses.dataset,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """A dataset version in PanNuke's official layout (Fold N/images/foldN/images.npy, ...:
    our importer and PanNuke-metrics read it), as CellViT-ready folders (foldK/images/*.png,
    labels/*.npy {inst_map, type_map}, types.csv, cell_count.csv, dataset_config.yaml: what
    CellViT's PanNukeDataset trains on, any tile size) or as QuPath GeoJSON per tile."""
    from histocurate.dataset.formats import export_dataset
    from histocurate.dataset.store import datasets_root, resolve_dataset

    config = config_for(workspace)
    version = resolve_dataset(datasets_root(config.workspace), spec)
    with console.status(f"exporting {version.spec} as {fmt.value}"):
        counts = export_dataset(version, fmt.value, directory.resolve(), classes=classes.value)
    console.print(
        f"{counts['tiles']} tiles, {counts['exported']} nuclei written to {directory}"
        + (
            f"; {counts['left_out']} nuclei without a {fmt.value} class left out"
            if counts["left_out"]
            else ""
        )
        + (
            f"; {counts['untyped']} nuclei without a class kept as instances with type 0"
            if counts.get("untyped")
            else ""
        ),
        soft_wrap=True,
    )
