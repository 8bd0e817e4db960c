"""The demo runner: the whole pipeline on the built-in synthetic cohort, step by step.

It runs the same commands a user types, in order, in one workspace, with a local
Cytomine-compatible sandbox standing in for the real server and simulated pathologists
standing in for people (`histocurate.demo.sandbox`, `histocurate.demo.pathologists`). Every
step is a real stage; nothing is mocked. Re-running resumes: stages skip work already done.
`histocurate demo` (histocurate/cli/demo.py) is the command around it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from histocurate.cli.base import console
from histocurate.errors import HistocurateError
from histocurate.workspace import Workspace

DEMO_PROJECT = "histocurate-demo"  # validation campaign: 3 of 9 pathologists per tile
TRAIN_PROJECT = "histocurate-demo-train"  # training campaign: one pathologist per tile
TRAIN_INDICATION = "COAD"
VAL_DATASET, TRAIN_DATASET = "demo-val", "demo-train"
TINY_RUN = "demo-tiny"  # the tiny CellViT the demo trains (runs/demo-tiny/)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    workspace: Path
    indication: str
    n_tiles: int
    n_uncertain: int
    annotators_per_tile: int
    segmenter: str
    checkpoint: Path | None
    prefect: bool | None
    train_indication: str = TRAIN_INDICATION
    train_tiles: int = 8
    train_minutes: float = 1.0


class StepFailed(HistocurateError):
    """A command of the demo failed; it has printed why. Carries its exit code and, once
    `timed_steps` has seen it, the name of its step."""

    def __init__(self, argv: tuple[str, ...], code: int) -> None:
        super().__init__(f"`histocurate {' '.join(argv)}` failed (exit code {code})")
        self.code = code
        self.step = ""


def _cli(*argv: str) -> None:
    """Run one histocurate command in-process; stop the demo if it fails."""
    from histocurate.cli.app import main

    console.rule(f"[bold]histocurate {' '.join(argv)}")
    code = main(list(argv))
    if code != 0:
        raise StepFailed(argv, code)


def _prefect_flag(options: DemoOptions) -> list[str]:
    if options.prefect is None:
        return []
    return ["--prefect"] if options.prefect else ["--no-prefect"]


def write_truth_tiles(workspace: Workspace) -> int:
    """Map the synthetic truth into the tiles (the demo's reference); return the row count."""
    from data_schema import TILES, TRUTH, TRUTH_TILES
    from histocurate.io import read_table, write_table
    from histocurate.synth import truth_in_tiles

    tiles = read_table(workspace.tiles, TILES)
    truth = truth_in_tiles(read_table(workspace.truth, TRUTH), tiles)
    write_table(truth, workspace.truth_tiles, TRUTH_TILES)
    return len(truth)


@contextmanager
def _cytomine_environment(keys: dict[str, str]) -> Iterator[None]:
    """Give the sandbox admin's keys to the export/import commands, then take them back."""
    saved = {name: os.environ.get(name) for name in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def selected_truth_path(workspace: Workspace) -> Path:
    """The truth of the tiles selected by this run: what the simulated pathologists see."""
    return workspace.synthetic / "truth_selected.parquet"


def campaign_truth_path(workspace: Workspace) -> Path:
    """The truth of every tile of the demo's Cytomine project: the reference the consensus
    is judged by. A re-run whose selection changed adds tiles to the project, and the
    consensus covers all of them, so this is the union over runs, not this selection."""
    return workspace.synthetic / "truth_campaign.parquet"


def _annotation_campaign(
    options: DemoOptions, ws: str, flag: list[str], *, project: str, indication: str, k: int
) -> None:
    """Export one indication's selection to a sandbox Cytomine project (``k`` of the 9
    simulated pathologists per tile), annotate it, import the clicks."""
    from data_schema import ASSIGNMENTS, SELECTION, TRUTH_TILES
    from histocurate.demo.annotation import annotate, running_sandbox
    from histocurate.io import partition_path, read_table, write_table

    workspace = Workspace(options.workspace.resolve())
    selection = partition_path(workspace.selection, indication)
    selected = set(read_table(selection, SELECTION)["tile_id"])
    truth = read_table(workspace.truth_tiles, TRUTH_TILES)
    truth = truth[truth["tile_id"].isin(selected)]
    write_table(truth, selected_truth_path(workspace), TRUTH_TILES)
    with running_sandbox(db_path=workspace.root / "cytomine-sandbox.db") as sandbox:
        annotators = ",".join(sandbox.annotators)
        with _cytomine_environment(sandbox.env()):
            _cli("export", "-w", ws, "--project", project, "--indication", indication,
                 "--annotators", annotators, "--k", str(k), *flag)  # fmt: skip
            console.rule(f"[bold]simulated pathologists annotate {project} on the sandbox")
            result = annotate(sandbox, project=project, truth=truth, seed=0)
            console.print(f"{len(result.clicks)} clicks by {len(result.posted)} annotators")
            _cli("import", "-w", ws, "--project", project, *flag)
    if project != DEMO_PROJECT:
        return
    assigned = read_table(workspace.assignments, ASSIGNMENTS, columns=["project", "tile_id"])
    campaign = set(assigned.loc[assigned["project"] == DEMO_PROJECT, "tile_id"])
    everything = read_table(workspace.truth_tiles, TRUTH_TILES)
    write_table(
        everything[everything["tile_id"].isin(campaign)],
        campaign_truth_path(workspace),
        TRUTH_TILES,
    )


def _train_tiny(options: DemoOptions, ws: str, flag: list[str]) -> None:
    """Train the tiny CellViT for a bounded time, once (a re-run keeps the trained run)."""
    run = Workspace(options.workspace.resolve()).root / "runs" / TINY_RUN
    if (run / "best.pt").is_file():
        console.print(f"{run}: already trained (delete it to train again)")
        return
    _cli("train", "-w", ws, "--dataset", TRAIN_DATASET, "--fold", "0", "--preset", "tiny",
         "--epochs", "500", "--max-minutes", str(options.train_minutes), "--device", "cpu",
         "--run-name", TINY_RUN, *flag)  # fmt: skip


def round1_path(workspace: Workspace, indication: str) -> Path:
    """The first round's selection, kept before the second round replaces it."""
    return workspace.reports / "select" / f"round1-{indication}.parquet"


def _second_round(options: DemoOptions, ws: str, flag: list[str]) -> None:
    """Select again with the model's predictions as presence labels; print how the share
    of rare-type nuclei in the selected tiles changed (against the synthetic truth)."""
    import shutil

    from data_schema import SELECTION, TRUTH_TILES
    from histocurate.io import partition_path, read_table
    from histocurate.predict.labels import rare_share

    workspace = Workspace(options.workspace.resolve())
    current = partition_path(workspace.selection, options.indication)
    first = round1_path(workspace, options.indication)
    first.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(current, first)
    _cli("select", "-w", ws, "--indication", options.indication, "--n-tiles",
         str(options.n_tiles), "--n-uncertain", str(options.n_uncertain),
         "--labels-from", "predictions", *flag)  # fmt: skip
    truth = read_table(workspace.truth_tiles, TRUTH_TILES, columns=["tile_id", "label"])
    for name, path in (("round 1 (truth labels)", first), ("round 2 (model labels)", current)):
        share = rare_share(read_table(path, SELECTION)["tile_id"].tolist(), truth)
        console.print(
            f"{name}: {int(share['tiles'])} tiles, {share['tiles_with_rare']:.1%} hold a rare "
            f"type, {share['rare_nuclei_share']:.1%} of their nuclei are of a rare type"
        )


def _tile_px(workspace: Workspace) -> str:
    """Side of the tiles as read (the evaluation rasterises polygons on that grid)."""
    from data_schema import TILES
    from histocurate.io import read_table

    sizes = read_table(workspace.tiles, TILES, columns=["tile_px"])["tile_px"].unique()
    if len(sizes) != 1:
        raise HistocurateError(f"tiles of several sizes {sorted(sizes)}: evaluate them apart")
    return str(int(sizes[0]))


def _slides_of(workspace: Workspace, indication: str) -> str:
    """The slides of an indication (the second round learns presence from them all)."""
    from data_schema import SLIDES
    from histocurate.io import read_table

    slides = read_table(workspace.slides, SLIDES, columns=["slide_id", "indication"])
    return ",".join(sorted(slides.loc[slides["indication"] == indication, "slide_id"]))


def demo_steps(options: DemoOptions) -> list[tuple[str, Callable[[], None]]]:
    """The pipeline, step by step (name, action)."""
    ws = str(options.workspace)
    flag = _prefect_flag(options)
    workspace = Workspace(options.workspace.resolve())
    select = [
        "select",
        "-w",
        ws,
        "--indication",
        options.indication,
        "--n-tiles",
        str(options.n_tiles),
        "--n-uncertain",
        str(options.n_uncertain),
        "--labels",
        str(workspace.truth_tiles),
    ]
    segment = ["segment", "-w", ws, "--segmenter", options.segmenter]
    if options.checkpoint is not None:
        segment += ["--checkpoint", str(options.checkpoint)]
    select_train = ["select", "-w", ws, "--indication", options.train_indication,
                    "--n-tiles", str(options.train_tiles), "--n-uncertain", "0",
                    "--labels", str(workspace.truth_tiles)]  # fmt: skip
    build = ["dataset", "build", "-w", ws, "--folds", "2"]
    evaluate = [
        "evaluate",
        "-w",
        ws,
        "--truth",
        str(campaign_truth_path(workspace)),
        "--pred",
        str(workspace.campaign(DEMO_PROJECT).consensus),
        "--out",
        str(workspace.evaluation),
    ]
    return [
        ("synth", lambda: _cli("synth", "-w", ws)),
        ("tile", lambda: _cli("tile", "-w", ws, *flag)),
        ("embed", lambda: _cli("embed", "-w", ws, "--encoder", "builtin", *flag)),
        ("truth in tiles", lambda: console.print(f"{write_truth_tiles(workspace)} nuclei")),
        ("select", lambda: _cli(*select, *flag)),
        ("annotate", lambda: _annotation_campaign(options, ws, flag, project=DEMO_PROJECT,
                                                  indication=options.indication,
                                                  k=options.annotators_per_tile)),
        ("segment", lambda: _cli(*segment, "--project", DEMO_PROJECT, *flag)),
        ("consensus", lambda: _cli("consensus", "-w", ws, "--project", DEMO_PROJECT, *flag)),
        ("evaluate", lambda: _cli(*evaluate, "--tile-size", _tile_px(workspace), *flag)),
        ("validation dataset", lambda: _cli(*build, "--name", VAL_DATASET, "--project",
                                            DEMO_PROJECT, "--source", "consensus", *flag)),
        ("select (training)", lambda: _cli(*select_train, *flag)),
        ("annotate (training)", lambda: _annotation_campaign(
            options, ws, flag, project=TRAIN_PROJECT, indication=options.train_indication, k=1)),
        ("segment (training)", lambda: _cli(*segment, "--project", TRAIN_PROJECT, *flag)),
        ("training dataset", lambda: _cli(*build, "--name", TRAIN_DATASET, "--project",
                                          TRAIN_PROJECT, "--source", "masks", *flag)),
        ("train (tiny CellViT)", lambda: _train_tiny(options, ws, flag)),
        ("predict (validation tiles)", lambda: _cli("predict", "-w", ws, "--checkpoint",
                                                    TINY_RUN, "--dataset", VAL_DATASET, *flag)),
        ("evaluate the model", lambda: _cli("evaluate", "-w", ws, "--model", TINY_RUN,
                                            "--dataset", VAL_DATASET, *flag)),
        ("predict (slides)", lambda: _cli("predict", "-w", ws, "--checkpoint", TINY_RUN,
                                          "--slides", _slides_of(workspace, options.indication),
                                          *flag)),
        ("select (round 2)", lambda: _second_round(options, ws, flag)),
    ]  # fmt: skip


def check_segmenter(workspace: Path, segmenter: str, checkpoint: Path | None) -> None:
    """Build the segmenter the segment step will use, so that an unknown name or missing or
    bad NuClick weights are refused now, not after minutes of synth, tiling and annotation
    (`UserInputError`, as the segment command would raise it)."""
    from histocurate.config import load_config
    from histocurate.segment.stage import segmenter_for

    overrides = {"segment": {"checkpoint": str(checkpoint)}} if checkpoint else {}
    segmenter_for(load_config(workspace, overrides), segmenter)


def timed_steps(steps: list[tuple[str, Callable[[], None]]]) -> list[tuple[str, float]]:
    """Run the steps in order; their seconds. A failed step's `StepFailed` names it."""
    timings = []
    for name, action in steps:
        start = time.perf_counter()
        try:
            action()
        except StepFailed as exc:
            exc.step = name
            raise
        timings.append((name, time.perf_counter() - start))
    return timings


def run_demo(options: DemoOptions) -> list[tuple[str, float]]:
    """Run the demo; through Prefect (`flows.demo.demo_flow`: one parent run, the stages
    as its subflows) when the demo runs its stages through Prefect."""
    from histocurate.cli.base import use_prefect

    if use_prefect(options.prefect):
        from flows.demo import demo_flow, demo_parameters

        return demo_flow(**demo_parameters(options))
    return timed_steps(demo_steps(options))
