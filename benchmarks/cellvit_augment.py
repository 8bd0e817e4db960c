"""CellViT augmentation throughput on 448 px tiles, one core: albumentations vs kornia (CPU).

albumentations: the package's pipeline (`histocurate.cellvit.augment`, CellViT's full set)
per tile, then the targets rebuilt from the moved instance map, as a loader worker does.
kornia (measured when it is importable): the subset it has (no Superpixels, ZoomBlur or
Downscale), batched by 16, image and masks (nearest) together. Also each albumentations
transform alone (ms per call), to show where the time goes.

    .venv/bin/python benchmarks/cellvit_augment.py [--tiles 200]
    # kornia too, from an environment that has it (e.g. the post-processing benchmark's):
    PYTHONPATH=. /work/bench-venv/bin/python benchmarks/cellvit_augment.py
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SIZE = 448


def _tile(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    inst = np.zeros((SIZE, SIZE), np.int32)
    rr, cc = np.indices(inst.shape)
    for i in range(1, 171):
        r, c = rng.uniform(0, SIZE, 2)
        inst[((rr - r) / rng.uniform(5, 12)) ** 2 + ((cc - c) / rng.uniform(5, 12)) ** 2 <= 1] = i
    return image, inst, ((inst % 13) + 1).astype(np.uint8) * (inst > 0)


def albumentations_rate(tiles: list[tuple[np.ndarray, ...]], n: int) -> tuple[float, float]:
    from histocurate.cellvit.augment import CellViTAugment

    aug = CellViTAugment()
    aug(*tiles[0], seed=0)
    start = time.process_time()
    for i in range(n):
        aug(*tiles[i % len(tiles)], seed=i)
    moved = time.process_time() - start
    start = time.process_time()
    for i in range(n):
        aug(*tiles[i % len(tiles)], seed=i).targets()
    return n / moved, n / (time.process_time() - start)


def per_transform(tile: tuple[np.ndarray, ...]) -> list[tuple[str, float]]:
    import albumentations as A

    from histocurate.cellvit.augment import AugmentConfig, build_pipeline

    image, inst, types = tile
    mask = np.stack([inst, types, inst * 0], -1).astype(np.int32)
    out = []
    for transform in build_pipeline(AugmentConfig()).transforms:
        transform.p = 1.0
        one = A.Compose([transform], seed=0)
        one(image=image, mask=mask)
        start = time.process_time()
        for _ in range(5):
            one(image=image, mask=mask)
        out.append((type(transform).__name__, (time.process_time() - start) / 5 * 1e3))
    return out


def kornia_rate(batches: int = 3, batch: int = 16) -> float | None:
    try:
        import kornia.augmentation as K
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    pipe = K.AugmentationSequential(
        K.RandomRotation90(times=(0, 3), p=0.5),
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomBoxBlur(kernel_size=(7, 7), p=0.2),
        K.RandomGaussianNoise(std=50**0.5 / 255, p=0.25),
        K.ColorJitter(0.25, 0.25, 0.1, 0.05, p=0.2),
        K.RandomResizedCrop((SIZE, SIZE), scale=(0.25, 1.0), p=0.1),
        K.RandomElasticTransform(kernel_size=(63, 63), sigma=(25.0, 25.0), alpha=(0.5, 0.5), p=0.2),
        data_keys=["input", "mask"],
    )
    images = torch.rand(batch, 3, SIZE, SIZE)
    masks = torch.randint(0, 170, (batch, 3, SIZE, SIZE)).float()
    pipe(images, masks)
    start = time.process_time()
    for _ in range(batches):
        pipe(images, masks)
    return batches * batch / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=200)
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import cv2

    cv2.setNumThreads(1)
    tiles = [_tile(s) for s in range(8)]
    moved, with_targets = albumentations_rate(tiles, args.tiles)
    print(f"448 px tiles, one core (CPU time), {args.tiles} tiles")
    print(f"albumentations, CellViT's full set:          {moved:6.1f} tiles/s")
    print(f"  ... and the targets rebuilt (HV maps):      {with_targets:6.1f} tiles/s")
    rate = kornia_rate()
    shown = f"{rate:6.1f} tiles/s" if rate is not None else "not installed here"
    print(f"kornia on the CPU, its subset, batches of 16: {shown}")
    print("each albumentations transform alone (ms per call, p = 1):")
    for name, ms in per_transform(tiles[0]):
        print(f"  {name:20}{ms:8.1f}")


if __name__ == "__main__":
    main()
