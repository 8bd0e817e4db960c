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
NOISE = 14.0  # smooth noise of the oracle maps: std about 1.3 in logits


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


def oracle_probabilities(
    inst_map: np.ndarray,
    rc: np.ndarray,
    nucleus_ids: np.ndarray,
    origins: np.ndarray,
    *,
    patch_size: int = 128,
    seed: int = 0,
) -> np.ndarray:
    """Probability maps (N, P, P) float32 shaped like a trained NuClick's, from the truth.

    For benchmarks and tests of the post-processing, where random weights give noise masks
    (hundreds of specks per patch) that cost far more than real outputs. Per click: the
    clicked nucleus blurred to a soft edge (logit +6 inside, 0 at the border), its
    neighbours faint (logit -3.5) and smooth noise (std about 1.3 in logits), so that a
    patch holds the clicked nucleus plus about one bleed into a neighbour or a speck (some
    under ``min_size``; "keep the clicked component" drops them) and neighbouring clicks'
    maps overlap at shared borders. Mean Dice to the truth: about 0.98.
    ``nucleus_ids[i]`` is click i's nucleus in ``inst_map`` (0: none, the map is empty
    there and the click falls back).
    ``origins`` are the patch origins (row, col) of `nuclick.guidance.patch_origins`; the
    image is taken as already padded to the patch size.
    """
    rng = np.random.default_rng(seed)
    height, width = inst_map.shape
    padded = np.zeros((max(height, patch_size), max(width, patch_size)), dtype=inst_map.dtype)
    padded[:height, :width] = inst_map
    out = np.empty((len(rc), patch_size, patch_size), dtype=np.float32)
    for k, ((r0, c0), nid) in enumerate(zip(origins, nucleus_ids, strict=True)):
        inst = padded[r0 : r0 + patch_size, c0 : c0 + patch_size]
        target = ndi.gaussian_filter((inst == nid) & (nid > 0), 1.0, output=np.float32)
        others = ndi.gaussian_filter((inst > 0) & (inst != nid), 1.5, output=np.float32)
        noise = ndi.gaussian_filter(rng.normal(0, 1, (patch_size, patch_size)), 3.0) * NOISE
        logit = 12.0 * target + 2.5 * others - 6.0 + noise.astype(np.float32)
        out[k] = 1.0 / (1.0 + np.exp(-logit))
    return out
