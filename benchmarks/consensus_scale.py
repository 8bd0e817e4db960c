"""Consensus at HistoVAL scale: 530 tiles, 212,992 annotated nuclei from 3 annotators.

Synthetic polygons (no images): each tile holds ~150 true nuclei (ellipses on a jittered
grid, 448 px tiles); each annotator marks ~134 of them per tile with a slightly shifted and
rescaled mask and a label (10% confusion, 5% 'unknown'), plus ~2% spurious clicks. Every
size runs in its own process (so peak memory is that size's alone) on the cores given
(default 2, the target machine) and times `build_consensus` (validation from WKB, matching,
majority + Dawid-Skene labels). Target: full size under 60 s and 4 GiB; time growth from
1/10 to full size close to linear.

``--end-to-end``: the segment and consensus stages from files, on a workspace whose tiles
table holds N slides x 5,000 tiles (7 and 700 slides by default: 35,000 and 3.5 M rows) of
which 530 tiles are annotated (exported images with purple nuclei on pink, 3 annotators,
~40 clicks each per tile; watershed segmenter, consensus re-segmentation on). The
annotation-side stages read the campaign's rows only, so time and memory must not grow with
the tiles table.

    python benchmarks/consensus_scale.py [--fractions 0.1 0.25 0.5 1] [--cores 2]
    python benchmarks/consensus_scale.py --end-to-end [--slides 7 700]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

FULL_TILES = 530
FULL_ANNOTATIONS = 212_992
ANNOTATORS = ("pathologist_a", "pathologist_b", "pathologist_c")
TILE_PX = 448
TRUE_PER_TILE = 150


def make_masks(n_tiles: int, n_annotations: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Annotated masks (WKB polygons) for ``n_tiles`` tiles, ``n_annotations`` rows in all."""
    import numpy as np
    import pandas as pd
    import shapely

    from histocurate.labels import LABELS

    rng = np.random.default_rng(seed)
    per = np.full((n_tiles, len(ANNOTATORS)), n_annotations // (n_tiles * len(ANNOTATORS)))
    rest = n_annotations - per.sum()
    per.flat[rng.choice(per.size, size=rest, replace=False)] += 1
    side = int(np.ceil(np.sqrt(TRUE_PER_TILE)))
    cell = TILE_PX / side
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)[:TRUE_PER_TILE] * cell + cell / 2
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    tiles, annots, cx, cy, rx, ry, rot, labels = [], [], [], [], [], [], [], []
    for t in range(n_tiles):
        centre = grid + rng.uniform(-cell / 5, cell / 5, grid.shape)
        radius = rng.uniform(5, 10, (TRUE_PER_TILE, 2))
        theta = rng.uniform(0, np.pi, TRUE_PER_TILE)
        truth_label = rng.choice(len(LABELS), TRUE_PER_TILE)
        for a in range(len(ANNOTATORS)):
            k = int(per[t, a])
            n_spurious = max(1, k // 50)
            pick = rng.choice(TRUE_PER_TILE, size=k - n_spurious, replace=False)
            c = np.concatenate([centre[pick], rng.uniform(10, TILE_PX - 10, (n_spurious, 2))])
            r = np.concatenate([radius[pick], rng.uniform(5, 10, (n_spurious, 2))])
            c = c + rng.normal(0, 1.0, c.shape)
            r = r * rng.uniform(0.9, 1.1, r.shape)
            lab = np.concatenate([truth_label[pick], rng.choice(len(LABELS), n_spurious)])
            confused = rng.random(k) < 0.10
            lab[confused] = rng.choice(len(LABELS), int(confused.sum()))
            tiles.append(np.full(k, t))
            annots.append(np.full(k, a))
            cx.append(c[:, 0])
            cy.append(c[:, 1])
            rx.append(r[:, 0])
            ry.append(r[:, 1])
            rot.append(np.concatenate([theta[pick], rng.uniform(0, np.pi, n_spurious)]))
            labels.append(np.where(rng.random(k) < 0.05, -1, lab))
    tile, annot = np.concatenate(tiles), np.concatenate(annots)
    x, y = np.concatenate(cx), np.concatenate(cy)
    a_r, b_r, th = np.concatenate(rx), np.concatenate(ry), np.concatenate(rot)
    ex = a_r[:, None] * np.cos(angles)[None, :]
    ey = b_r[:, None] * np.sin(angles)[None, :]
    px = x[:, None] + ex * np.cos(th)[:, None] - ey * np.sin(th)[:, None]
    py = y[:, None] + ex * np.sin(th)[:, None] + ey * np.cos(th)[:, None]
    polys = shapely.polygons(np.stack([px, py], axis=2))
    names = np.array([*LABELS, "unknown"], dtype=object)
    return pd.DataFrame(
        {
            "annotation_id": np.arange(1, tile.size + 1, dtype=np.int64),
            "tile_id": np.char.add("tile-", tile.astype(str)).astype(object),
            "annotator": np.array(ANNOTATORS, dtype=object)[annot],
            "x": x,
            "y": y,
            "label": names[np.concatenate(labels)],
            "polygon": shapely.to_wkb(polys),
        }
    )


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(fraction: float) -> dict[str, float]:
    from histocurate.consensus import build_consensus

    n_tiles = max(1, round(FULL_TILES * fraction))
    n_ann = round(FULL_ANNOTATIONS * n_tiles / FULL_TILES)
    masks = make_masks(n_tiles, n_ann)
    before = _rss_mib()
    start = time.perf_counter()
    result = build_consensus(masks)
    seconds = time.perf_counter() - start
    nuclei = result.nuclei
    return {
        "fraction": fraction,
        "tiles": n_tiles,
        "annotations": len(masks),
        "nuclei": len(nuclei),
        "determined": float(nuclei["label"].notna().mean()),
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": _rss_mib(),
    }


E2E_TILES = 530
E2E_CLICKS = 40  # per annotator and tile
TILES_PER_SLIDE = 5000


def build_workspace(root: str, n_slides: int, seed: int = 0) -> None:
    """A workspace with a big tiles table and one campaign of 530 exported tiles."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from data_schema import TILES
    from histocurate.config import load_config
    from histocurate.io import write_partition
    from histocurate.workspace import init_workspace
    from tests.campaigns import export_tiles, write_points

    rng = np.random.default_rng(seed)
    ws = init_workspace(Path(root), load_config(root, require_file=False, environ={}))
    side = int(np.ceil(np.sqrt(TILES_PER_SLIDE)))
    k = np.arange(TILES_PER_SLIDE)
    for s in range(n_slides):
        xs, ys = (k % side) * 896, (k // side) * 896
        frame = pd.DataFrame(
            {
                "tile_id": [f"s{s}_x{x}_y{y}" for x, y in zip(xs, ys, strict=True)],
                "slide_id": f"s{s}",
                "indication": "LUAD",
                "cohort": "c",
                "slide_path": f"/slides/s{s}.svs",
                "x": xs,
                "y": ys,
                "size_level0": 896,
                "mpp": 0.25,
                "tile_mpp": 0.25,
                "tile_px": 448,
                "read_level": 0,
                "read_size": 896,
                "resized": False,
                "tissue_fraction": 1.0,
            },
            columns=TILES.column_names,
        )
        write_partition(frame, ws.tiles, f"s{s}", TILES, provenance={"slide": f"s{s}"})
    chosen = [
        (
            f"s{t % n_slides}",
            f"s{t % n_slides}_x{(t // n_slides) % side * 896}_y{(t // n_slides) // side * 896}",
        )
        for t in range(E2E_TILES)
    ]
    yy, xx = np.mgrid[:448, :448]
    clicks = []
    by_slide: dict[str, dict[str, np.ndarray]] = {}
    for slide, tile in chosen:
        image = np.empty((448, 448, 3), np.uint8)
        image[:] = (232, 178, 204)
        centres = rng.uniform(20, 428, (E2E_CLICKS + 5, 2))
        for cx, cy in centres:
            image[(xx - cx) ** 2 + (yy - cy) ** 2 <= 36] = (80, 45, 135)
        by_slide.setdefault(slide, {})[tile] = image
        for a in ("pathologist_a", "pathologist_b", "pathologist_c"):
            for cx, cy in centres[rng.choice(len(centres), E2E_CLICKS, replace=False)]:
                clicks.append((tile, a, cx + rng.normal(0, 1), cy + rng.normal(0, 1)))
    frames = [
        export_tiles(
            Path(root),
            "scale",
            images,
            annotators=["pathologist_a", "pathologist_b", "pathologist_c"],
            slide_id=slide,
        )
        for slide, images in sorted(by_slide.items())
    ]
    del frames
    points = pd.DataFrame(clicks, columns=["tile_id", "annotator", "x", "y"])
    points.insert(0, "annotation_id", np.arange(1, len(points) + 1))
    write_points(Path(root), "scale", points)


def run_end_to_end(n_slides: int) -> dict[str, float]:
    import tempfile

    from histocurate.config import load_config
    from histocurate.consensus.stage import run_consensus
    from histocurate.segment.stage import run_segment

    root = tempfile.mkdtemp(prefix=f"consensus-e2e-{n_slides}-")
    t0 = time.perf_counter()
    build_workspace(root, n_slides)
    built = time.perf_counter() - t0
    config = load_config(root, {"consensus": {"overlays": 0, "geojson": False}}, environ={})
    before = _rss_mib()
    c0, t0 = _cpu_s(), time.perf_counter()
    seg = run_segment(config, project="scale")
    c1, t1 = _cpu_s(), time.perf_counter()
    cons = run_consensus(config, project="scale")
    c2, t2 = _cpu_s(), time.perf_counter()
    return {
        "segment_cpu": c1 - c0,
        "consensus_cpu": c2 - c1,
        "slides": n_slides,
        "tile_rows": n_slides * TILES_PER_SLIDE,
        "build_s": built,
        "masks": seg.masks,
        "nuclei": len(cons.nuclei),
        "segment_s": t1 - t0,
        "consensus_s": t2 - t1,
        "rss_before_mib": before,
        "peak_rss_mib": _rss_mib(),
    }


def _cpu_s() -> float:
    """CPU seconds of this process (less sensitive than wall time to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--end-to-end", action="store_true", help="segment + consensus from files")
    parser.add_argument("--slides", type=int, nargs="+", default=[7, 700])
    parser.add_argument("--e2e-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one)))
        return
    if args.e2e_one is not None:
        print(json.dumps(run_end_to_end(args.e2e_one)))
        return
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.cores)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def child(*flags: str) -> dict[str, float]:
        cmd = [sys.executable, __file__, *flags]
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))[: args.cores]
            cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    if args.end_to_end:
        print(
            f"{'slides':>6} {'tile rows':>10} {'masks':>7} {'nuclei':>7} {'segment s':>9} "
            f"{'(cpu)':>6} {'consensus s':>11} {'(cpu)':>6} {'peak RSS MiB':>12} "
            f"{'before MiB':>10} {'build s':>8}"
        )
        for n in args.slides:
            r = child("--e2e-one", str(n))
            print(
                f"{r['slides']:>6d} {r['tile_rows']:>10,d} {r['masks']:>7,d} "
                f"{r['nuclei']:>7,d} {r['segment_s']:>9.1f} {r['segment_cpu']:>6.1f} "
                f"{r['consensus_s']:>11.1f} {r['consensus_cpu']:>6.1f} "
                f"{r['peak_rss_mib']:>12.0f} {r['rss_before_mib']:>10.0f} "
                f"{r['build_s']:>8.1f}"
            )
        print(
            f"(cores: {args.cores}; {E2E_TILES} annotated tiles; target: no growth with "
            "the tiles table)"
        )
        return
    rows = [child("--one", str(fraction)) for fraction in args.fractions]
    base = rows[0]
    print(
        f"{'fraction':>8} {'tiles':>6} {'annotations':>11} {'nuclei':>8} {'determined':>10} "
        f"{'seconds':>8} {'x time':>7} {'x size':>7} {'peak RSS MiB':>12} {'before MiB':>10}"
    )
    for r in rows:
        grow_t, grow_n = r["seconds"] / base["seconds"], r["annotations"] / base["annotations"]
        print(
            f"{r['fraction']:>8.2f} {r['tiles']:>6d} {r['annotations']:>11,d} {r['nuclei']:>8,d} "
            f"{r['determined']:>10.3f} {r['seconds']:>8.2f} "
            f"{grow_t:>7.2f} {grow_n:>7.2f} "
            f"{r['peak_rss_mib']:>12.0f} {r['rss_before_mib']:>10.0f}"
        )
    print(f"(cores: {args.cores}; target: full size < 60 s and < 4096 MiB peak RSS)")


if __name__ == "__main__":
    main()
