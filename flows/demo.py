"""`histocurate demo --prefect` as one parent run: each step's stage is a subflow of it.

The steps are the demo runner's (`histocurate.demo.runner.demo_steps`): the same commands
a user types, run in-process; under this flow each stage command's flow becomes a subflow
of the demo run and carries its ``group:demo-<time>`` tag, so one filter in the UI shows
the whole demo. The summary artifact lists the steps' times and the files they changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows._params import Count, Indication, Positive, Segmenter
from flows._pipeline import pipeline_run
from flows._stage import stage_flow


@stage_flow("demo")
def demo_flow(
    workspace: str,
    indication: Indication = "LUAD",
    n_tiles: Count = 12,
    n_uncertain: int = 10,
    annotators_per_tile: Count = 3,
    segmenter: Segmenter = "watershed",
    checkpoint: str | None = None,
    train_minutes: Positive = 1.0,
) -> list[tuple[str, float]]:
    """The whole pipeline on the built-in synthetic cohort, step by step.

    Args:
        workspace: Demo workspace (created by `histocurate demo` or `histocurate init`).
        indication: Indication to select tiles from.
        n_tiles: Tiles drawn from the diversity + rare pool (N0).
        n_uncertain: Tiles drawn from the uncertainty pool, at most.
        annotators_per_tile: Simulated pathologists per tile (of 9).
        segmenter: watershed (no weights) or nuclick (needs checkpoint).
        checkpoint: NuClick weights.
        train_minutes: Time budget of the tiny CellViT's training.
    """
    from histocurate.demo.runner import DEMO_PROJECT, DemoOptions, demo_steps, timed_steps

    options = DemoOptions(Path(workspace), indication, n_tiles, n_uncertain, annotators_per_tile,
                          segmenter, Path(checkpoint) if checkpoint else None, True,
                          train_minutes=train_minutes)  # fmt: skip
    with pipeline_run("demo", workspace, campaign=DEMO_PROJECT, indication=indication) as run:
        timings = timed_steps(demo_steps(options))
        run.stages.update({name: f"{seconds:.1f} s" for name, seconds in timings})
        run.finish()
        return timings


def demo_parameters(options: Any) -> dict[str, Any]:
    """The flow's parameters from the runner's `DemoOptions`."""
    return {
        "workspace": str(Path(options.workspace).resolve()),
        "indication": options.indication,
        "n_tiles": options.n_tiles,
        "n_uncertain": options.n_uncertain,
        "annotators_per_tile": options.annotators_per_tile,
        "segmenter": options.segmenter,
        "checkpoint": str(options.checkpoint) if options.checkpoint else None,
        "train_minutes": options.train_minutes,
    }
