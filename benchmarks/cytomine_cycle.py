"""Reliability of the Cytomine cycle under injected faults (issues 5 and 13).

    python benchmarks/cytomine_cycle.py                    # 50 tiles, 10% faults, 3 of 9
    python benchmarks/cytomine_cycle.py --faults 0.2 --tiles 20 --server-version 2025-12

A 50-tile validation campaign (448 px tiles, 9 simulated pathologists, 3 per tile) is
exported (`run_export`: frozen PNGs, uploads through PIMS with its asynchronous import),
annotated and imported (`run_import`) against a sandbox server behaving as the current
release, answering a fraction of all requests with 500/503, a hang past the client's
timeout, or a dropped connection, before or after the server commits. The cycle must end
with exactly the annotations that were made, and one upload per tile: none lost, none
duplicated. Prints a table of measured numbers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from data_schema.points import POINTS
from data_schema.tiles import TILES
from histocurate.config import load_config
from histocurate.cytomine.retry import RetryPolicy
from histocurate.cytomine.stage import run_export, run_import
from histocurate.demo.annotation import annotate, running_sandbox
from histocurate.demo.sandbox import FaultInjector
from histocurate.io import read_table, write_partition
from histocurate.labels import LABELS
from histocurate.workspace import Workspace, init_workspace

COLUMNS = ["annotator", "tile_id", "x", "y", "label"]


def campaign(n_tiles: int, px: int, nuclei: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    tiles = pd.DataFrame(
        {
            "tile_id": [f"bench_x{i * px}_y0" for i in range(n_tiles)],
            "slide_id": "bench",
            "indication": "LUAD",
            "cohort": "bench",
            "slide_path": "/none.tif",
            "x": np.arange(n_tiles) * px,
            "y": 0,
            "size_level0": px,
            "mpp": 0.25,
            "tile_mpp": 0.25,
            "tile_px": px,
            "read_level": 0,
            "read_size": px,
            "resized": False,
            "tissue_fraction": 1.0,
        }
    )
    n = n_tiles * nuclei
    truth = pd.DataFrame(
        {
            "tile_id": np.repeat(tiles.tile_id, nuclei),
            "x": rng.uniform(0, px, n),
            "y": rng.uniform(0, px, n),
            "label": rng.choice(LABELS, n),
        }
    )
    return tiles[TILES.column_names], truth


def pixels(tile: pd.Series) -> np.ndarray:
    px = int(tile["tile_px"])
    return np.random.default_rng(int(tile["x"])).integers(0, 256, (px, px, 3), dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiles", type=int, default=50)
    parser.add_argument("--px", type=int, default=448)
    parser.add_argument("--nuclei", type=int, default=120, help="true nuclei per tile")
    parser.add_argument("--faults", type=float, default=0.10)
    parser.add_argument("--timeout", type=float, default=2.0, help="client read timeout, s")
    parser.add_argument("--import-delay", type=float, default=0.2, help="PIMS import time, s")
    parser.add_argument("--server-version", default=None, help="sandbox profile (current)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tiles, truth = campaign(args.tiles, args.px, args.nuclei, args.seed)
    policy = RetryPolicy(attempts=10, backoff_s=0.05, max_backoff_s=1.0, timeout_s=args.timeout)
    faults = FaultInjector(rate=args.faults, hang_s=args.timeout + 0.5, seed=args.seed)
    times = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_sandbox(
            faults=faults, server_version=args.server_version, import_delay_s=args.import_delay
        ) as sandbox,
    ):
        root = Path(tmp) / "ws"
        init_workspace(root, load_config(root, require_file=False, environ={}))
        write_partition(tiles, Workspace(root).tiles, "bench", TILES, provenance={"scan": "1"})
        selection = Path(tmp) / "selection.parquet"
        pq.write_table(
            pa.Table.from_pandas(tiles[["tile_id", "slide_id", "indication"]]), selection
        )
        os.environ.update(sandbox.env())
        config = load_config(
            root, {"cytomine": {"retries": 10, "backoff_s": 0.05, "timeout_s": args.timeout}}
        )
        start = time.perf_counter()
        export = run_export(
            config,
            selection=selection,
            project="cycle",
            annotators=sandbox.annotators,
            k=3,
            image_source=pixels,
        )
        times["export"] = time.perf_counter() - start
        start = time.perf_counter()
        made = annotate(sandbox, project="cycle", truth=truth, policy=policy)
        times["annotate"] = time.perf_counter() - start
        start = time.perf_counter()
        result = run_import(config, project="cycle")
        times["import"] = time.perf_counter() - start
        points = read_table(Workspace(root).points, POINTS)
        db = sandbox.server.db
        with db.lock:
            stored = {
                t: db._all(f"SELECT COUNT(*) FROM {t}")[0][0]
                for t in ("uploaded_files", "image_instances", "terms", "annotations", "properties")
            }
    summary = faults.summary()
    key = COLUMNS
    got = points[key].astype({"x": float, "y": float}).sort_values(key).reset_index(drop=True)
    want = made.clicks[key].astype({"x": float, "y": float}).sort_values(key).reset_index(drop=True)
    merged = got.merge(want, how="outer", indicator=True)
    lost = int((merged["_merge"] == "right_only").sum())
    extra = int((merged["_merge"] == "left_only").sum())
    title = (
        f"{args.tiles}-tile cycle, {args.faults:.0%} injected faults, server "
        f"{sandbox.server.profile.name}, async PIMS import {args.import_delay:.2f} s"
    )
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    injected = sum(v for k, v in summary.items() if k != "requests")
    table.add_row("requests served / faults injected", f"{summary['requests']:,} / {injected}")
    table.add_row(
        "faults by kind", ", ".join(f"{k} {v}" for k, v in summary.items() if k != "requests")
    )
    table.add_row(
        "retries (export / annotate / import)",
        f"{export.retries} / {made.retries} / {result.retries}",
    )
    table.add_row("tiles failed at export", str(len(export.failed)))
    table.add_row(
        "uploads / images on server (expected)",
        f"{stored['uploaded_files']} / {stored['image_instances']} ({args.tiles})",
    )
    table.add_row("terms on server (expected)", f"{stored['terms']} (14)")
    counts = f"{len(made.clicks):,} / {stored['annotations']:,} / {len(points):,}"
    table.add_row("clicks made / on server / imported", counts)
    table.add_row("rejected at import", str(sum(result.rejected.values())))
    table.add_row(
        "lost / duplicated or wrong", f"{lost} / {extra + len(got) - len(got.drop_duplicates())}"
    )
    table.add_row("exact match", str(lost == 0 and extra == 0 and got.equals(want)))
    for stage, seconds in times.items():
        table.add_row(f"{stage} time", f"{seconds:.1f} s")
    Console().print(table)


if __name__ == "__main__":
    main()
