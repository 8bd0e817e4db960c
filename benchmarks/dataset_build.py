"""`dataset build` at HistoTRAIN size: 1,415 tiles of 448 px, ~109k nuclei, 93 tiles at 20x.

A synthetic campaign is written first (not timed into the build): ~100 slides of 6
indications, 14-15 tiles each, one annotator per tile (the HistoTRAIN case: ``--source
masks``), 77 nuclei per tile with the synthetic cohort's outlines and a HistoTRAIN-like class
mix (2 'unknown' per tile), frozen images of ~330 KB (noisy H&E-like pixels); 7 slides are
scanned at 20x (224 px at 0.5 um/px) and get resampled. The build then runs in its own
process (so its peak memory is its own) with the given workers; a re-run (a no-op) is timed
too. Target: under 2 minutes on 2 cores.

    python benchmarks/dataset_build.py [--tiles 1415] [--workers 2] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INDICATIONS = ("LUAD", "COAD", "BRCA", "PRAD", "SKCM", "MESO")
MIX = {"cancer_cell": 0.33, "lymphocyte": 0.2, "fibroblast": 0.12, "plasmocyte": 0.05,
       "eosinophil": 0.02, "neutrophil": 0.02, "macrophage": 0.04, "smooth_muscle_cell": 0.04,
       "endothelial_cell": 0.05, "red_blood_cell": 0.04, "epithelial_cell": 0.05,
       "mitotic_figure": 0.02, "apoptotic_body": 0.02}  # fmt: skip
PER_TILE = 77
AT_20X = 93


def write(root: Path, n_tiles: int, workers: int) -> float:
    import numpy as np

    from histocurate.dataset.run import parallel_mapper
    from histocurate.dataset.synthetic import SyntheticTile, write_campaign

    rng = np.random.default_rng(0)
    labels, weights = list(MIX), np.array(list(MIX.values()))
    tiles = []
    n_low = round(n_tiles * AT_20X / 1415)
    low = set(np.linspace(0, n_tiles - 1, n_low).astype(int).tolist()) if n_low else set()
    for k in range(n_tiles):
        at20 = k in low
        slide = k // 14 if not at20 else 1000 + 7 * k // n_tiles  # 7 slides scanned at 20x
        tiles.append(SyntheticTile(
            f"tile{k:05d}", f"slide{slide:04d}", indication=INDICATIONS[slide % len(INDICATIONS)],
            annotators=(f"pathologist{k % 9}",), side=224 if at20 else 448,
            mpp=0.5 if at20 else 0.25, spacing=45,
            labels=list(rng.choice(labels, size=PER_TILE, p=weights / weights.sum())),
            unknown=2, seed=k,
        ))  # fmt: skip
    start = time.perf_counter()
    with parallel_mapper(workers) as mapper:
        write_campaign(root, tiles, project="histotrain", consensus=False, mapper=mapper)
    return time.perf_counter() - start


def _rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build_only(root: Path, workers: int) -> None:
    """Child process: the build (and a re-run), as JSON on stdout."""
    from histocurate.config import load_config
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.run import parallel_mapper

    config = load_config(root)
    before = _rss_mib(resource.RUSAGE_SELF)
    cpu0 = _cpu()
    start = time.perf_counter()
    with parallel_mapper(workers) as mapper:
        run = run_dataset_build(config, name="histotrain", source="masks", mapper=mapper)
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu0
    start = time.perf_counter()
    again = run_dataset_build(config, name="histotrain", source="masks")
    rerun = time.perf_counter() - start
    assert run.path is not None and again.status == "up to date"
    counts = run.info["counts"]
    print(json.dumps({
        "tiles": counts["tiles"], "nuclei": counts["nuclei"],
        "undetermined": counts["undetermined"],
        "resampled": run.info["rasterisation"]["resampled_tiles"],
        "contested_nuclei": run.info["rasterisation"]["contested_nuclei"],
        "seconds": seconds, "rerun_seconds": rerun, "workers": workers, "cpu_seconds": cpu,
        "timings": run.timings,
        "rss_before_mib": before, "peak_rss_mib": _rss_mib(resource.RUSAGE_SELF),
        "peak_worker_rss_mib": _rss_mib(resource.RUSAGE_CHILDREN),
        "tiles_mb": (run.path / "tiles.parquet").stat().st_size / 1e6,
        "nuclei_mb": (run.path / "nuclei.parquet").stat().st_size / 1e6,
        "status": run.status, "exit_code": run.exit_code,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1415)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workspace", type=Path, default=None, help="Kept; reused if built.")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build_only(args.build_only, args.workers)
        return
    root = args.workspace or Path(tempfile.mkdtemp(prefix="dataset-bench-")) / "ws"
    if (root / "assignments.parquet").exists():
        print(f"reusing the campaign in {root}")
    else:
        seconds = write(root, args.tiles, args.workers)
        print(f"synthetic campaign of {args.tiles} tiles written in {seconds:.0f} s ({root})")
    for path in (root / "datasets").glob("histotrain/*"):
        import shutil

        shutil.rmtree(path)
    load = os.getloadavg()[0]
    found = subprocess.run(
        [sys.executable, __file__, "--build-only", str(root), "--workers", str(args.workers)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    r = json.loads(found.stdout.strip().splitlines()[-1])
    r["load"] = [load]
    columns = {
        "tiles": f"{r['tiles']}",
        "nuclei": f"{r['nuclei']}",
        "undet.": f"{r['undetermined']}",
        "20x": f"{r['resampled']}",
        "workers": f"{r['workers']}",
        "seconds": f"{r['seconds']:.1f}",
        "tiles/s": f"{r['tiles'] / r['seconds']:.1f}",
        "CPU s": f"{r['cpu_seconds']:.0f}",
        "re-run s": f"{r['rerun_seconds']:.1f}",
        "peak MiB": f"{r['peak_rss_mib']:.0f}",
        "worker MiB": f"{r['peak_worker_rss_mib']:.0f}",
        "tiles.parquet MB": f"{r['tiles_mb']:.0f}",
        "nuclei MB": f"{r['nuclei_mb']:.1f}",
    }
    print(" ".join(f"{k:>{max(len(k), len(v))}}" for k, v in columns.items()))
    print(" ".join(f"{v:>{max(len(k), len(v))}}" for k, v in columns.items()))
    t = r["timings"]
    print(
        f"wall: plan {t['plan']:.1f} s, tiles {t['tiles']:.1f} s ({r['workers']} processes), "
        f"assemble {t['assemble']:.1f} s; load average before/after "
        f"{r['load'][0]:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"(status {r['status']}, exit code {r['exit_code']}; contested nuclei "
        f"{r['contested_nuclei']}; target: < 120 s on 2 cores)"
    )


if __name__ == "__main__":
    main()
