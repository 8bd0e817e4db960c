"""Reliability of the Cytomine cycle under injected faults (issue 5, item 6).

    python benchmarks/cytomine_cycle.py                    # 50 tiles, 10% faults, 3 of 9
    python benchmarks/cytomine_cycle.py --faults 0.2 --tiles 20

A 50-tile validation campaign (448 px tiles, 9 simulated pathologists, 3 per tile) is
exported, annotated and imported against a sandbox server answering a fraction of all
requests with 500/503, a hang past the client's timeout, or a dropped connection, before
or after the server commits. The cycle must end with exactly the annotations that were
made: none lost, none duplicated. Prints a table of measured numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from histocurate.cytomine.client import RetryPolicy, connect
from histocurate.cytomine.demo import annotate, running_sandbox
from histocurate.cytomine.export import export_campaign
from histocurate.cytomine.importer import import_annotations
from histocurate.cytomine.sandbox import FaultInjector
from histocurate.labels import LABELS

COLUMNS = ["annotator", "tile_id", "x", "y", "label"]


def campaign(n_tiles: int, px: int, nuclei: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    tiles = pd.DataFrame(
        {"tile_id": [f"bench_x{i * px}_y0" for i in range(n_tiles)], "tile_mpp": 0.25,
         "tile_px": px, "x": np.arange(n_tiles) * px}
    )  # fmt: skip
    n = n_tiles * nuclei
    truth = pd.DataFrame(
        {"tile_id": np.repeat(tiles.tile_id, nuclei), "x": rng.uniform(0, px, n),
         "y": rng.uniform(0, px, n), "label": rng.choice(LABELS, n)}
    )  # fmt: skip
    return tiles, truth


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tiles, truth = campaign(args.tiles, args.px, args.nuclei, args.seed)
    policy = RetryPolicy(attempts=10, backoff_s=0.05, max_backoff_s=1.0, timeout_s=args.timeout)
    faults = FaultInjector(rate=args.faults, hang_s=args.timeout + 0.5, seed=args.seed)
    times = {}
    with tempfile.TemporaryDirectory() as tmp, running_sandbox(faults=faults) as sandbox:
        work = Path(tmp)
        start = time.perf_counter()
        with connect(sandbox.credentials(), policy) as conn:
            export = export_campaign(
                conn, project="cycle", tile_ids=list(tiles.tile_id), tiles=tiles,
                annotators=sandbox.annotators, k=3, assignments_path=work / "a.parquet",
                image_source=pixels,
            )  # fmt: skip
        times["export"] = time.perf_counter() - start
        start = time.perf_counter()
        made = annotate(sandbox, project="cycle", truth=truth, policy=policy)
        times["annotate"] = time.perf_counter() - start
        start = time.perf_counter()
        with connect(sandbox.credentials(), policy) as conn:
            result = import_annotations(
                conn, project="cycle", points_path=work / "points.parquet",
                rejects_path=work / "rejects.parquet", assignments_path=work / "a.parquet",
            )  # fmt: skip
        times["import"] = time.perf_counter() - start
        db = sandbox.server.db
        with db.lock:
            stored = {t: db._one(f"SELECT COUNT(*) FROM {t}")[0] for t in
                      ("image_instances", "terms", "annotations", "properties")}  # fmt: skip
    summary = faults.summary()
    key = COLUMNS
    got = (
        result.points[key].astype({"x": float, "y": float}).sort_values(key).reset_index(drop=True)
    )
    want = made.clicks[key].astype({"x": float, "y": float}).sort_values(key).reset_index(drop=True)
    merged = got.merge(want, how="outer", indicator=True)
    lost = int((merged["_merge"] == "right_only").sum())
    extra = int((merged["_merge"] == "left_only").sum())
    table = Table(title=f"{args.tiles}-tile cycle, {args.faults:.0%} injected faults")
    table.add_column("measure")
    table.add_column("value", justify="right")
    injected = sum(v for k, v in summary.items() if k != "requests")
    table.add_row("requests served / faults injected", f"{summary['requests']:,} / {injected}")
    table.add_row(
        "faults by kind", ", ".join(f"{k} {v}" for k, v in summary.items() if k != "requests")
    )
    table.add_row("retries (export / annotate / import)",
                  f"{export.retries} / {made.retries} / {result.retries}")  # fmt: skip
    table.add_row("images on server (expected)", f"{stored['image_instances']} ({args.tiles})")
    table.add_row("terms on server (expected)", f"{stored['terms']} (14)")
    counts = f"{len(made.clicks):,} / {stored['annotations']:,} / {len(result.points):,}"
    table.add_row("clicks made / on server / imported", counts)
    table.add_row(
        "lost / duplicated or wrong", f"{lost} / {extra + len(got) - len(got.drop_duplicates())}"
    )
    table.add_row("exact match", str(lost == 0 and extra == 0 and got.equals(want)))
    for stage, seconds in times.items():
        table.add_row(f"{stage} time", f"{seconds:.1f} s")
    Console().print(table)


if __name__ == "__main__":
    main()
