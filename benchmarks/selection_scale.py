"""Selection at scale: end-to-end `run_selection` time and peak memory vs number of slides.

Synthetic features (`histocurate.testing.selection_data`): N slides x T tiles x 768-d
("phikon") plus an 83-d second view ("builtin", the built-in encoder's size), so the
presence models have their 12 candidates. All slides are one indication; presence labels
exist for a fixed set of tiles (default 2,000, 100 tiles on each of 20 slides: a first
annotation campaign), so model choice costs the same at every N and the rest grows with N.
Default configuration of `[selection]` (K = 20, 5-member ensembles, 3 x 3 nested CV).

Each point runs in a fresh subprocess (clean peak RSS). ``--source files`` first writes the
features as the embed stage does (features/<encoder>/<slide>.parquet; not timed) and reads
them back during selection; ``--source memory`` makes them on the fly (compute only).

    python benchmarks/selection_scale.py                    # 70 and 140 slides
    python benchmarks/selection_scale.py --slides 70,700 --source files
    python benchmarks/selection_scale.py --slides 7 --tiles 500   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cohort(n_slides: int, tiles: int, dim: int):  # type: ignore[no-untyped-def]
    from histocurate.testing.selection_data import SyntheticCohort

    return SyntheticCohort(
        n_slides=n_slides,
        tiles_per_slide=tiles,
        dim=dim,
        n_cohorts=5,
        indications=("LUAD",),
        encoders=("phikon", "builtin"),
        second_dim=83,
        signal=1.0,
    )


def one_point(args: argparse.Namespace, n_slides: int) -> dict[str, float]:
    from histocurate.config import SelectionConfig
    from histocurate.selection.pipeline import run_selection
    from histocurate.selection.sources import WorkspaceFeatures
    from histocurate.testing.selection_data import SyntheticFeatures

    cohort = _cohort(n_slides, args.tiles, args.dim)
    slides = cohort.slides()
    n_lab_slides = min(20, n_slides)
    labels = cohort.labels(cohort.slide_ids[:n_lab_slides], per_slide=args.labelled // n_lab_slides)
    source = SyntheticFeatures(cohort)
    tmp = None
    write_s = 0.0
    if args.source == "files":
        from histocurate.features.store import write_slide_features
        from histocurate.workspace import Workspace

        tmp = Path(tempfile.mkdtemp(prefix="selscale-", dir=args.tmp))
        ws = Workspace(tmp)
        t0 = time.perf_counter()
        for s in cohort.slide_ids:
            f = source.load(s)
            for enc in cohort.encoders:
                write_slide_features(ws.features(enc), s, enc, list(f.tile_ids), f.values[enc])
        write_s = time.perf_counter() - t0
        source = WorkspaceFeatures(tmp, cohort.encoders)  # type: ignore[assignment]
    config = SelectionConfig()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = run_selection("LUAD", slides, source, labels, config=config)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss: KiB)
    return {
        "slides": n_slides,
        "tiles": n_slides * args.tiles,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_gib": peak,
        "write_s": write_s,
        "selected": len(result.selection),
        **{f"{k}_s": v for k, v in result.timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", default="70,140", help="Comma-separated slide counts.")
    parser.add_argument("--tiles", type=int, default=5000, help="Tiles per slide.")
    parser.add_argument("--dim", type=int, default=768, help="Feature dimension (phikon).")
    parser.add_argument("--labelled", type=int, default=2000, help="Labelled tiles.")
    parser.add_argument("--source", choices=["memory", "files"], default="memory")
    parser.add_argument("--tmp", default=None, help="Folder for --source files.")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_point(args, args.one)))
        return
    rows = []
    for n in [int(x) for x in args.slides.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--tiles",
            str(args.tiles),
            "--dim",
            str(args.dim),
            "--labelled",
            str(args.labelled),
            "--source",
            args.source,
        ]
        if args.tmp:
            cmd += ["--tmp", args.tmp]
        load = os.getloadavg()[0]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"point {n} failed")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load_before"] = load
        rows.append(row)
        print(_fmt(row), flush=True)
    print()
    print(
        f"selection scale ({args.tiles} tiles/slide, {args.dim}-d + 83-d, {args.labelled} "
        f"labelled tiles, source={args.source}, {os.cpu_count()} CPUs)"
    )
    cols = [
        "slides",
        "tiles",
        "wall_s",
        "cpu_s",
        "peak_gib",
        "scan_s",
        "fit_s",
        "score_s",
        "draw_s",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(_cell(r.get(c, float("nan"))) for c in cols))
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per_slide = ((b["wall_s"] - b["fit_s"]) - (a["wall_s"] - a["fit_s"])) / (
            b["slides"] - a["slides"]
        )
        fixed = a["fit_s"]
        est = fixed + (a["wall_s"] - a["fit_s"]) + per_slide * (700 - a["slides"])
        print(
            f"\nper-slide cost (scan + score, slope {a['slides']}->{b['slides']}): "
            f"{per_slide:.2f} s; fixed model choice: {fixed:.0f} s; "
            f"linear extrapolation to 700 slides: {est / 60:.1f} min"
        )


def _cell(v: float) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _fmt(row: dict[str, float]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in row.items())


if __name__ == "__main__":
    main()
