"""Several processes from one caller (the Prefect flow): ``torchrun`` running the CLI, then
the outcomes read back from the run folders it wrote.

>>> torchrun_command(2, ["--dataset", "ds", "--fold", "0"])[1:6]
['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from histocurate.cellvit.rundir import LAST, MetricsLog, RunDir, validation_table
from histocurate.errors import UserInputError
from histocurate.runs import ItemOutcome


def torchrun_command(nproc: int, arguments: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m histocurate train <arguments>``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "histocurate",
        "train",
        "--no-prefect",
        *arguments,
    ]


def outcome_of(run_dir: Path, fold: int) -> ItemOutcome:
    """A run folder's outcome as `histocurate.training.stage.train_fold` would give it."""
    run = RunDir(run_dir)
    name = f"fold {fold}"
    if not run.last.is_file():
        return ItemOutcome(name, "failed", error=f"{run.path}: no {LAST} (the run failed early)")
    import torch

    state = torch.load(run.last, map_location="cpu", weights_only=True)["training"]
    validation: dict[str, float] | None = None
    if run.metrics_path.exists():
        log = MetricsLog(run)
        log.resume(10**18)
        table = validation_table(log.frame())
        if len(table):
            last = table.iloc[-1].drop(["epoch", "step"]).to_dict()
            validation = {str(k): float(v) for k, v in last.items()}
    best = float(state["best_bpq"])
    seconds = float(state["seconds"])
    extra: dict[str, Any] = {
        "run": str(run.path),
        "status": "finished" if state["epoch"] >= state["settings"]["epochs"] else "stopped",
        "epochs": int(state["epoch"]),
        "images": int(state["images"]),
        "images_per_s": round(int(state["images"]) / max(seconds, 1e-9), 2),
        "best_bpq": best if math.isfinite(best) else None,
        "best_epoch": state.get("best_epoch"),
        "validation": validation,
    }
    return ItemOutcome(name, "done", count=int(state["step"]), seconds=seconds, extra=extra)


def launch(nproc: int, arguments: Sequence[str], *, cwd: Path) -> None:
    """Run ``torchrun`` and wait; a failure is an error carrying the end of its output."""
    done = subprocess.run(
        torchrun_command(nproc, arguments), cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout)[-2000:]
        error = UserInputError if done.returncode == 2 else RuntimeError
        raise error(f"torchrun exited with {done.returncode}: {tail}")
