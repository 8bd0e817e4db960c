"""A workspace holding a synthetic cohort, tiled: shared by the benchmarks that need one.

Every step resumes (slides already generated with the same settings, slides already
tiled are kept), so a cached workspace costs seconds to reuse.
"""

from __future__ import annotations

import time
from pathlib import Path

from histocurate.cli.app import main
from histocurate.config import SynthConfig
from histocurate.synth import generate_cohort, write_manifest
from histocurate.workspace import Workspace

INDICATIONS: list[str] = SynthConfig().indications  # type: ignore[call-arg]


def synthetic_workspace(root: Path, *, per_indication: int, size: int, workers: int) -> Workspace:
    """Synthetic cohort (``size`` px square slides) -> manifest -> tiles, in ``root``."""
    workspace = Workspace(root.resolve())
    if not workspace.config_file.exists():
        assert main(["init", str(root)]) == 0
    start = time.perf_counter()
    slides = generate_cohort(
        workspace.synthetic,
        indications=INDICATIONS,
        slides_per_indication=per_indication,
        width_px=size,
        height_px=size,
        workers=workers,
    )
    write_manifest(slides, workspace.root / "slides.csv")
    print(f"cohort: {len(slides)} slides of {size} px ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    code = main(["tile", "-w", str(root), "--no-prefect"])
    assert code == 0, f"tiling failed ({code})"
    print(f"tiling: {time.perf_counter() - start:.0f} s")
    return workspace
