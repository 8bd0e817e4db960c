"""Import benchmark: 200,000 point annotations (HistoVAL scale) from the local server.

    python benchmarks/import.py                      # 200,000 points on 1,000 tiles
    python benchmarks/import.py --points 50000 --images 250

The sandbox server runs in another process (so the importer's memory is measured alone)
on a SQLite file filled directly (admin-side bulk insert), behaving as the current server
release; every image carries the tile and assignment properties `histocurate export`
writes (all annotators assigned), so every point passes the assignment check. The import
goes through the real cytomine-python-client like `histocurate import`. Target (issue 5):
under 2 minutes on 2 cores. Prints a table of measured numbers: full import, re-import
with no change, peak memory of the importing process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from data_schema.assignments import ASSIGNMENTS
from histocurate.cytomine.client import RetryPolicy, connect
from histocurate.cytomine.credentials import Credentials
from histocurate.cytomine.images import ASSIGNMENT_KEY, IMAGE_CLASS, TILE_KEY
from histocurate.cytomine.importer import import_annotations
from histocurate.cytomine.projects import term_names
from histocurate.demo.sandbox import FaultInjector, SandboxDB
from histocurate.labels import ANNOTATION_LABELS, cell_type

TILE_PX = 448


def build_database(
    path: Path, *, points: int, images: int, annotators: int, seed: int
) -> tuple[str, str]:
    """Fill a sandbox database; return the admin's keys."""
    db = SandboxDB(path)
    keys = db.create_user("admin", admin=True)
    users = [db.create_user(f"pathologist{i + 1:02d}") for i in range(annotators)]
    uid = {pub: row["id"] for pub, _ in users if (row := db.user_by_public_key(pub))}
    admin_id = db.user_by_public_key(keys[0])["id"]  # type: ignore[index]
    onto = db.create_ontology("bench", admin_id)
    terms = [
        db.create_term({"name": name, "ontology": onto["id"], "color": cell_type(label).color})[
            "id"
        ]
        for label, name in term_names().items()
    ]
    project = db.create_project({"name": "bench", "ontology": onto["id"]}, admin_id)
    for user_id in uid.values():
        db.add_project_user(project["id"], user_id)
    storage = db.storages()[0]["id"]
    image_ids = []
    everyone = ",".join(f"pathologist{i + 1:02d}" for i in range(annotators))
    for i in range(images):
        tile = f"bench_x{i * TILE_PX}_y0"
        made = db.add_upload(
            filename=f"{tile}.png",
            size=1,
            width=TILE_PX,
            height=TILE_PX,
            mpp=0.25,
            storage_id=storage,
            user_id=admin_id,
            projects=[project["id"]],
        )
        image_id = made["images"][0]["imageInstances"][0]["id"]
        db.set_property(IMAGE_CLASS, image_id, {"key": TILE_KEY, "value": tile})
        db.set_property(IMAGE_CLASS, image_id, {"key": ASSIGNMENT_KEY, "value": everyone})
        image_ids.append(image_id)
    rng = np.random.default_rng(seed)
    img = rng.choice(image_ids, points)
    who = rng.choice(list(uid.values()), points)
    term = rng.choice(terms, points)
    xy = np.round(rng.uniform(0, TILE_PX, (points, 2)) * 256) / 256
    now = int(time.time() * 1000)
    rows = [
        (int(i), int(u), int(t), float(x), float(y), now)
        for i, u, t, (x, y) in zip(img, who, term, xy, strict=True)
    ]
    db.bulk_insert_points(rows, project_id=project["id"])
    db.close()
    assert len(terms) == len(ANNOTATION_LABELS)
    return keys


def _serve(path: str, port: int, ready: mp.Queue) -> None:
    from histocurate.demo.sandbox.server import serve_forever

    serve_forever(path, port=port, faults=FaultInjector(), ready=ready.put)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--images", type=int, default=1_000)
    parser.add_argument("--annotators", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        public, private = build_database(
            work / "sandbox.db",
            points=args.points,
            images=args.images,
            annotators=args.annotators,
            seed=0,
        )
        setup_s = time.perf_counter() - start
        ready: mp.Queue = mp.Queue()
        server = mp.Process(target=_serve, args=(str(work / "sandbox.db"), free_port(), ready))
        server.start()
        host = ready.get(timeout=30)
        try:
            creds = Credentials(host, public, private)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            timings = []
            for _ in range(2):  # full import, then re-import with no change
                start = time.perf_counter()
                with connect(creds, RetryPolicy(timeout_s=120)) as conn:
                    result = import_annotations(
                        conn,
                        project="bench",
                        points_path=work / "points.parquet",
                        rejects_path=work / "rejects.parquet",
                        assignments=ASSIGNMENTS.to_arrow().empty_table().to_pandas(),
                    )
                timings.append((time.perf_counter() - start, result))
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        finally:
            server.terminate()
            server.join()
    (full_s, full), (again_s, again) = timings
    title = f"import of {args.points:,} points, {args.images:,} tiles, {args.annotators} annotators"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("database fill (setup, not timed as import)", f"{setup_s:.1f} s")
    table.add_row("full import (list + convert + write)", f"{full_s:.1f} s")
    table.add_row("points imported / rejected", f"{len(full.points):,} / {len(full.rejects):,}")
    table.add_row(
        "re-import, no change (writes nothing)", f"{again_s:.1f} s, written={again.written}"
    )
    table.add_row("importer peak RSS (process, incl. Python)", f"{rss_after:.0f} MiB")
    table.add_row("importer RSS growth during imports", f"{rss_after - rss_before:.0f} MiB")
    table.add_row("target", "< 120 s on 2 cores")
    Console().print(table)


if __name__ == "__main__":
    main()
