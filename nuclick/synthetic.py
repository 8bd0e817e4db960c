"""Toy H&E-like images with known nuclei: dark purple ellipses on pink noise.

For tests, smoke runs and benchmarks, where no annotated data can be downloaded. Not a
substitute for real training data (`histocurate.synth` makes far richer tissue).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from nuclick.train_data import InstanceSample

PINK = np.array([232.0, 180.0, 205.0])
PURPLE = np.array([85.0, 50.0, 135.0])


def toy_sample(
    rng: np.random.Generator,
    *,
    size: int = 128,
    n_nuclei: int = 12,
    radius: tuple[float, float] = (4.0, 9.0),
) -> InstanceSample:
    """One image (size, size, 3) uint8 and its instance map (ids 1..n; 0 background).

    Ellipses may touch; a pixel claimed twice keeps the first nucleus.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    inst = np.zeros((size, size), dtype=np.int32)
    shade = np.zeros((size, size), dtype=np.float32)
    next_id = 1
    for _ in range(n_nuclei * 3):
        if next_id > n_nuclei:
            break
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(*radius), rng.uniform(*radius)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
        blob = (u * u + v * v) <= 1.0
        fresh = blob & (inst == 0)
        if fresh.sum() < 0.7 * blob.sum() or fresh.sum() < 12:
            continue
        inst[fresh] = next_id
        shade[fresh] = rng.uniform(0.65, 1.0)
        next_id += 1
    noise = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 2.0) * 10
    stroma = PINK + noise[..., None] + rng.normal(0, 6, (size, size, 3))
    texture = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 1.0)[..., None] * 12
    weight = ndi.gaussian_filter(shade, 0.7)[..., None]
    image = stroma * (1 - weight) + (PURPLE + texture) * weight
    return InstanceSample(np.clip(image, 0, 255).astype(np.uint8), inst, name="toy")


def toy_samples(
    n: int, *, seed: int = 0, size: int = 128, n_nuclei: int = 12
) -> list[InstanceSample]:
    rng = np.random.default_rng(seed)
    return [toy_sample(rng, size=size, n_nuclei=n_nuclei) for _ in range(n)]
