"""Inference windows over the tissue tiles of a slide, and the resolution they are read at.

A window is a square of ``window_px`` model pixels made of a *core* (``window_px - 2 *
margin_px``) and a margin on each side. The cores tile the slide on a grid anchored at its
origin; a window runs when its core meets a tissue tile of the tiling stage (a core wholly
off tissue is never read). Each nucleus belongs to the window whose core holds its centroid
(`histocurate.predict.stitch`), and the margins give that window the context around it.

Default (``[predict] window_um`` / ``margin_um``): 784 px with 64 px margins at 0.25 um/px,
HistoPLUS' own inference grid (656 px cores), so its released checkpoints run on the inputs
they were validated on. The margin is 16 um: a nucleus centred in a core reaches at most its
radius (under 10 um even for large tumour nuclei) beyond it, so it lies whole in the window,
and pixels within 16 um of a window edge (where the convolutions see padding) only serve
as context. Larger windows would waste fewer margin pixels (30 % of the pixels at 784 px,
25 % at 1036 px) but move further from the 448 px the model was trained on.

>>> g = window_geometry(window_um=196, margin_um=16, mpp=0.25, patch=14)
>>> g.window_px, g.margin_px, g.core_px
(784, 64, 656)
>>> plan_resolution(0.25, 0.5, slide="s1", checkpoint="m.pt").scale
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from histocurate.errors import UserInputError

MPP_TOLERANCE = 0.2  # relative: a slide within 20 % of the model's mpp is read as it is


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a slide's level-0 pixels map to the model's: ``scale`` level-0 px per model px."""

    slide_mpp: float
    model_mpp: float
    scale: float
    note: str | None = None


def plan_resolution(
    slide_mpp: float, model_mpp: float | None, *, slide: str, checkpoint: str
) -> Resolution:
    """Read as is within 20 % of the model's mpp (HistoPLUS' tolerance); a finer slide is
    downsampled to the model's mpp (said in the note); a coarser one is refused: upsampling
    would ask the model to see detail the scan does not hold."""
    note: str | None = None
    if model_mpp is None:
        note = f"{checkpoint} records no mpp: windows read at the slide's {slide_mpp:.3f} um/px"
        return Resolution(slide_mpp, slide_mpp, 1.0, note)
    ratio = model_mpp / slide_mpp
    if abs(ratio - 1.0) <= MPP_TOLERANCE:
        if abs(ratio - 1.0) > 0.01:
            note = (
                f"{slide}: read at its own {slide_mpp:.3f} um/px (within 20% of the "
                f"model's {model_mpp:g})"
            )
        return Resolution(slide_mpp, slide_mpp, 1.0, note)
    if ratio > 1.0:
        note = (
            f"{slide}: scanned at {slide_mpp:.3f} um/px, the model wants {model_mpp:g}: "
            f"windows resampled (x{1 / ratio:.2f})"
        )
        return Resolution(slide_mpp, model_mpp, ratio, note)
    raise UserInputError(
        f"slide {slide}: scanned at {slide_mpp:.3f} um/px, coarser than the {model_mpp:g} "
        f"um/px of {checkpoint}; upsampling would invent detail: use a checkpoint trained at "
        f"about {slide_mpp:.2g} um/px (e.g. a 20x HistoPLUS model) or a finer scan"
    )


@dataclass(frozen=True, slots=True)
class WindowGeometry:
    """Window and margin sides in model pixels."""

    window_px: int
    margin_px: int

    @property
    def core_px(self) -> int:
        return self.window_px - 2 * self.margin_px


def window_geometry(
    *, window_um: float, margin_um: float, mpp: float, patch: int
) -> WindowGeometry:
    """Window side rounded to a multiple of the encoder's ``patch`` at ``mpp`` um/px."""
    window = max(patch, round(window_um / mpp / patch) * patch)
    margin = round(margin_um / mpp)
    if window - 2 * margin < patch:
        raise UserInputError(
            f"[predict] window_um {window_um} with margin_um {margin_um} leaves no core at "
            f"{mpp} um/px ({window} px windows, {margin} px margins); widen the window"
        )
    return WindowGeometry(window, margin)


@dataclass(frozen=True, slots=True)
class Window:
    """One window: its place in the grid, what it reads (level-0 box) and its core."""

    index: int  # row-major in the slide's grid
    row: int
    col: int
    x0: int  # level-0 top-left of the read box
    y0: int
    side0: int  # level-0 side of the read box
    core: tuple[float, float, float, float]  # level-0 x0, y0, x1, y1 (half-open)
    neighbours: tuple[bool, bool, bool, bool]  # a window runs to the left, top, right, bottom
    tiles: tuple[str, ...]  # tissue tiles its core meets


@dataclass(frozen=True)
class WindowGrid:
    """The windows of one slide."""

    slide_id: str
    geometry: WindowGeometry
    resolution: Resolution
    core0: float  # level-0 side of a core
    margin0: float  # level-0 margin
    n_rows: int
    n_cols: int
    windows: tuple[Window, ...]

    def owner(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Row-major index of the core holding each level-0 point (-1 off the grid)."""
        col = np.floor(np.asarray(x, np.float64) / self.core0).astype(np.int64)
        row = np.floor(np.asarray(y, np.float64) / self.core0).astype(np.int64)
        inside = (col >= 0) & (col < self.n_cols) & (row >= 0) & (row < self.n_rows)
        return np.where(inside, row * self.n_cols + col, -1)


def plan_windows(
    tiles: pd.DataFrame, geometry: WindowGeometry, resolution: Resolution, *, slide_id: str
) -> WindowGrid:
    """The windows whose core meets a tissue tile (``tiles``: the slide's rows of the tiles
    table, with ``x``, ``y``, ``size_level0``, ``tile_id``)."""
    scale = resolution.scale
    core0, margin0 = geometry.core_px * scale, geometry.margin_px * scale
    side0 = round(geometry.window_px * scale)
    x = tiles["x"].to_numpy(np.float64)
    y = tiles["y"].to_numpy(np.float64)
    size = tiles["size_level0"].to_numpy(np.float64)
    meets: dict[tuple[int, int], list[str]] = {}
    j0, j1 = np.floor(x / core0).astype(int), np.ceil((x + size) / core0).astype(int) - 1
    i0, i1 = np.floor(y / core0).astype(int), np.ceil((y + size) / core0).astype(int) - 1
    for tile_id, a0, a1, b0, b1 in zip(tiles["tile_id"], i0, i1, j0, j1, strict=True):
        for i in range(a0, a1 + 1):
            for j in range(b0, b1 + 1):
                meets.setdefault((i, j), []).append(str(tile_id))
    n_rows = 1 + max((i for i, _ in meets), default=-1)
    n_cols = 1 + max((j for _, j in meets), default=-1)
    windows = []
    for i, j in sorted(meets):
        near = tuple((i + di, j + dj) in meets for di, dj in ((0, -1), (-1, 0), (0, 1), (1, 0)))
        windows.append(
            Window(
                index=i * n_cols + j,
                row=i,
                col=j,
                x0=round(j * core0 - margin0),
                y0=round(i * core0 - margin0),
                side0=side0,
                core=(j * core0, i * core0, (j + 1) * core0, (i + 1) * core0),
                neighbours=near,  # type: ignore[arg-type]
                tiles=tuple(sorted(meets[i, j])),
            )
        )
    return WindowGrid(
        slide_id, geometry, resolution, core0, margin0, n_rows, n_cols, tuple(windows)
    )


def read_level(downsamples: tuple[float, ...], scale: float) -> int:
    """The coarsest pyramid level whose pixels are still at least as fine as the model's
    (1 % slack: pyramid downsamples are often 3.9998 rather than 4).

    >>> read_level((1.0, 2.0, 4.0), 2.0), read_level((1.0, 4.0), 2.0), read_level((1.0,), 1.0)
    (1, 0, 0)
    """
    level = 0
    for index, downsample in enumerate(downsamples):
        if downsample <= scale * 1.01:
            level = index
    return level


def window_tiles_text(window: Window, limit: int = 3) -> str:
    """The tiles of a window for messages: ``s1_x0_y0, s1_x448_y0 (+2)``."""
    shown = ", ".join(window.tiles[:limit])
    more = len(window.tiles) - limit
    return f"{shown} (+{more})" if more > 0 else shown


def blank_fraction(rgb: np.ndarray) -> float:
    """Share of a window's pixels that look like glass (bright and grey)."""
    arr = np.asarray(rgb)
    low, high = arr.min(axis=2), arr.max(axis=2)
    return float(((low >= 215) & (high - low <= 18)).mean())


def is_blank(rgb: np.ndarray, *, threshold: float = 0.995) -> bool:
    """True for a window wholly off tissue (skipped without running the model)."""
    return math.isfinite(share := blank_fraction(rgb)) and share >= threshold
