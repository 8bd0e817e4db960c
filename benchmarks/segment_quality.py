"""Segmentation quality on the synthetic cohort: Dice and PQ of both segmenters vs truth.

Clicks are the true centroids with +-1.5 px jitter (a careful annotator); every click's
mask is compared with its own nucleus (mean Dice), and the instance map with the true one
(PQ / DQ / SQ, pooled over tiles, `histocurate.metrics`).

    python benchmarks/segment_quality.py --out /tmp/segq [--checkpoint best.pt]
    python benchmarks/segment_quality.py --out /tmp/segq --export-pannuke /tmp/pannuke_synth

``--export-pannuke`` writes the tiles as a PanNuke-layout training set for `nuclick train`
(images.npy, masks.npy with instance ids in channel 0), from slides other than the
evaluated ones (seed + 1000).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data_schema import TRUTH
from histocurate.io import read_table
from histocurate.metrics import panoptic_quality
from histocurate.metrics.panoptic import pooled
from histocurate.segment import make_segmenter, segment_images
from histocurate.slides import read_tile
from histocurate.synth import generate_cohort, truth_in_tiles
from nuclick.train_data import rasterize_polygons


def synthetic_tiles(
    out: Path, *, slides: int, size: int, tile_px: int, seed: int, indications: list[str]
) -> list[tuple[np.ndarray, np.ndarray, pd.DataFrame]]:
    """(image, true instance map, truth rows) for a grid of tiles of fresh synthetic slides."""
    made = generate_cohort(
        out,
        indications=indications,
        slides_per_indication=slides,
        width_px=size,
        height_px=size,
        seed=seed,
        workers=min(8, slides * len(indications)),
    )
    tiles = []
    for slide in made:
        for y in range(0, size - tile_px + 1, tile_px):
            for x in range(0, size - tile_px + 1, tile_px):
                tiles.append(
                    {
                        "tile_id": f"{slide.slide_id}_x{x}_y{y}",
                        "slide_id": slide.slide_id,
                        "slide_path": str(slide.path),
                        "x": x,
                        "y": y,
                        "size_level0": tile_px,
                        "tile_px": tile_px,
                        "read_level": 0,
                        "read_size": tile_px,
                    }
                )
    frame = pd.DataFrame(tiles)
    truth = read_table(out / "truth.parquet", TRUTH)
    inside = truth_in_tiles(truth, frame)
    result = []
    for row in frame.itertuples(index=False):
        nuclei = inside[inside.tile_id == row.tile_id]
        if len(nuclei) < 3:
            continue
        image = read_tile(row)
        inst = rasterize_polygons(nuclei["polygon"], (tile_px, tile_px))
        result.append((image, inst, nuclei.reset_index(drop=True)))
    return result


def export_consep(tiles: list[tuple[np.ndarray, np.ndarray, pd.DataFrame]], folder: Path) -> None:
    """CoNSeP layout with JPEG images (small enough to carry to a GPU machine)."""
    from PIL import Image
    from scipy.io import savemat

    (folder / "Images").mkdir(parents=True, exist_ok=True)
    (folder / "Labels").mkdir(parents=True, exist_ok=True)
    for k, (image, inst, _) in enumerate(tiles):
        Image.fromarray(image).save(folder / "Images" / f"tile_{k:04d}.jpg", quality=95)
        savemat(
            folder / "Labels" / f"tile_{k:04d}.mat",
            {"inst_map": inst.astype(np.int32)},
            do_compression=True,
        )
    print(f"{len(tiles)} tiles, {int(sum(t[1].max() for t in tiles))} nuclei -> {folder}")


def export_pannuke(tiles: list[tuple[np.ndarray, np.ndarray, pd.DataFrame]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.stack([t[0] for t in tiles])
    masks = np.zeros((*images.shape[:3], 6), dtype=np.int32)
    masks[..., 0] = np.stack([t[1] for t in tiles])
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    print(f"{len(tiles)} tiles, {int(sum(t[1].max() for t in tiles))} nuclei -> {folder}")


def evaluate(
    tiles: list[tuple[np.ndarray, np.ndarray, pd.DataFrame]],
    name: str,
    checkpoint: Path | None,
    jitter: float,
    seed: int,
) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    seg = make_segmenter(name, checkpoint, batch_size=64)
    images, points, truths = [], [], []
    for image, inst, nuclei in tiles:
        pts = nuclei[["x", "y"]].to_numpy() + rng.uniform(-jitter, jitter, (len(nuclei), 2))
        pts = np.clip(pts, 0, image.shape[0] - 1e-3)
        images.append(image)
        points.append(pts)
        truths.append(inst)
    start = time.perf_counter()
    results = segment_images(images, points, segmenter=seg)
    seconds = time.perf_counter() - start
    dices, pqs, fallback = [], [], 0
    for inst, pts, res in zip(truths, points, results, strict=True):
        rc = np.floor(pts[:, ::-1]).astype(int)
        for i, (r, c) in enumerate(rc):
            own = inst[r, c]
            pred = res.instance_map == res.instance_of[i]
            true = inst == own if own else np.zeros_like(pred)
            dices.append(2 * (pred & true).sum() / max(1, pred.sum() + true.sum()))
        pqs.append(panoptic_quality(inst, res.instance_map))
        fallback += res.n_fallback
    total = pooled(pqs)
    n = sum(len(p) for p in points)
    return {
        "segmenter": name,
        "clicks": n,
        "Dice": float(np.mean(dices)),
        "PQ": total.pq,
        "DQ": total.dq,
        "SQ": total.sq,
        "fallback": fallback,
        "nuclei/s": n / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--slides", type=int, default=1)
    parser.add_argument("--size", type=int, default=1792)
    parser.add_argument("--tile", type=int, default=448)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=1.5)
    parser.add_argument("--indications", nargs="+", default=["LUAD", "COAD"])
    parser.add_argument("--export-pannuke", type=Path, default=None)
    parser.add_argument("--export-consep", type=Path, default=None)
    args = parser.parse_args()
    if args.export_pannuke or args.export_consep:
        tiles = synthetic_tiles(
            args.out / "train",
            slides=args.slides,
            size=args.size,
            tile_px=args.tile,
            seed=args.seed + 1000,
            indications=args.indications,
        )
        if args.export_pannuke:
            export_pannuke(tiles, args.export_pannuke)
        if args.export_consep:
            export_consep(tiles, args.export_consep)
        return
    tiles = synthetic_tiles(
        args.out / "eval",
        slides=args.slides,
        size=args.size,
        tile_px=args.tile,
        seed=args.seed,
        indications=args.indications,
    )
    rows = [evaluate(tiles, "watershed", None, args.jitter, args.seed)]
    if args.checkpoint:
        rows.append(evaluate(tiles, "nuclick", args.checkpoint, args.jitter, args.seed))
    table = pd.DataFrame(rows)
    print(
        f"{len(tiles)} synthetic tiles of {args.tile} px, "
        f"clicks = true centroids +- {args.jitter} px"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
