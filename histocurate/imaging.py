"""The one RGB resize of the project (and its label-map twin), for tiles, segmenters,
datasets and pictures.

Images: bilinear (anti-aliased when shrinking, as Pillow's filter widens); halving (448 px
at 40x to 224 px) is an exact 2x2 mean (Pillow's ``reduce``, about 0.5 ms). Label maps
(instance and type maps): nearest neighbour, so ids are never blended.

>>> import numpy as np
>>> tile = np.zeros((448, 448, 3), np.uint8)
>>> resize_rgb(tile, (224, 224)).shape
(224, 224, 3)
>>> resize_labels(np.array([[1, 2], [3, 4]], np.int32), (4, 4))[0].tolist()
[1, 1, 2, 2]
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_rgb(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An RGB ``uint8`` image resized to ``shape = (height, width)``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    height, width = int(shape[0]), int(shape[1])
    if image.shape[:2] == (height, width):
        return image
    picture = Image.fromarray(np.ascontiguousarray(image))
    if image.shape[0] == 2 * height and image.shape[1] == 2 * width:
        return np.asarray(picture.reduce(2))
    # Pillow's bilinear widens its support when shrinking: anti-aliased, no extra pass
    return np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR))


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map (any integer dtype) resized to ``shape`` by nearest neighbour."""
    height, width = int(shape[0]), int(shape[1])
    if labels.shape[:2] == (height, width):
        return labels
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height, labels.shape[0] - 1)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width, labels.shape[1] - 1)
    return labels[rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :]]
