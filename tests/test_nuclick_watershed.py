"""The classical segmenter on nuclei (haematoxylin) and anucleate red blood cells (eosin)."""

from __future__ import annotations

import numpy as np
import shapely

from nuclick.watershed import watershed_segment


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pink stroma with a purple nucleus (r 8) and a red blood cell (r 13, no nucleus)."""
    rng = np.random.default_rng(0)
    image = np.empty((128, 128, 3), np.float64)
    image[:] = (235, 175, 200)  # eosin-pale stroma
    yy, xx = np.mgrid[:128, :128]
    nucleus = (xx - 40) ** 2 + (yy - 64) ** 2 <= 8**2
    rbc = (xx - 90) ** 2 + (yy - 64) ** 2 <= 13**2
    image[nucleus] = (70, 40, 130)
    image[rbc] = (200, 40, 60)
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), nucleus, rbc


def test_red_blood_cells_are_grown_on_eosin_not_given_a_disc() -> None:
    image, nucleus, rbc = _scene()
    result = watershed_segment(image, np.array([[40.5, 64.5], [90.5, 64.5]]))
    assert not result.fallback.any()
    for poly, truth in zip(result.polygons, (nucleus, rbc), strict=True):
        yy, xx = np.nonzero(truth)
        true_poly = shapely.union_all(
            [shapely.box(x, y, x + 1, y + 1) for x, y in zip(xx, yy, strict=True)]
        )
        iou = poly.intersection(true_poly).area / poly.union(true_poly).area
        assert iou > 0.8, iou


def test_a_click_on_bare_stroma_falls_back_to_a_disc() -> None:
    image, _, _ = _scene()
    result = watershed_segment(image, np.array([[10.5, 10.5]]))
    assert result.fallback.tolist() == [True] and result.polygons[0].area < 80
