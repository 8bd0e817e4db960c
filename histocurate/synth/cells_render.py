"""Draw cells into a block: each nucleus and cytoplasm in a small window, all at once.

Cells are grouped by window size; a group is one set of (n, S, S) array operations (no
Python loop per cell), and the windows are summed into the block with ``np.bincount``.
A pixel belongs to a nucleus when its centre lies inside the outline, which is exactly
the ground-truth polygon's rule, so truth and pixels agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from histocurate.synth.morphology import N_ANGLES, CellTable

F32 = NDArray[np.float32]


@dataclass(slots=True)
class CellLayers:
    """What the cells add to a block (all (h, w) float32)."""

    nucleus_alpha: F32
    nucleus_h: F32
    cyto_alpha: F32
    cyto_h: F32
    cyto_e: F32
    cyto_r: F32


@dataclass(frozen=True, slots=True)
class CellTextures:
    chromatin: F32  # periodic, fine speckle
    granules: F32  # periodic, very fine
    vacuoles: F32  # periodic, bubbles for foamy cytoplasm


def _lookup(table: F32, theta: F32) -> F32:
    """Outline radius at angles ``theta`` (n, S, S), linearly interpolated in a (n, M) table."""
    n = table.shape[0]
    t = (theta + np.float32(np.pi)) * np.float32(N_ANGLES / (2 * np.pi))
    i0 = np.floor(t)
    frac = t - i0
    i0 = i0.astype(np.int64) % N_ANGLES
    i1 = (i0 + 1) % N_ANGLES
    base = (np.arange(n, dtype=np.int64) * N_ANGLES)[:, None, None]
    flat = table.reshape(-1)
    return flat[base + i0] * (1 - frac) + flat[base + i1] * frac


def _window_grid(
    cx: NDArray[np.float64], cy: NDArray[np.float64], size: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], F32, F32]:
    ox = np.floor(cx).astype(np.int64) - size // 2
    oy = np.floor(cy).astype(np.int64) - size // 2
    steps = np.arange(size) + 0.5
    gx = (ox[:, None] + steps[None, :] - cx[:, None]).astype(np.float32)
    gy = (oy[:, None] + steps[None, :] - cy[:, None]).astype(np.float32)
    return ox, oy, gx, gy


def _periodic(texture: F32, oy: NDArray[np.int64], ox: NDArray[np.int64], size: int) -> F32:
    """Per-cell windows of a periodic texture at per-cell offsets."""
    ty, tx = texture.shape
    rows = (oy[:, None] + np.arange(size)[None, :]) % ty
    cols = (ox[:, None] + np.arange(size)[None, :]) % tx
    return texture[rows[:, :, None], cols[:, None, :]]


class _Scatter:
    """Collects (pixel, value) pairs of many windows; one ``bincount`` per layer at the end."""

    def __init__(self, y0: int, x0: int, h: int, w: int, layers: int) -> None:
        self.y0, self.x0, self.h, self.w = y0, x0, h, w
        self.index_parts: list[list[NDArray[np.int64]]] = [[] for _ in range(layers)]
        self.value_parts: list[list[F32]] = [[] for _ in range(layers)]

    def index(self, oy: NDArray[np.int64], ox: NDArray[np.int64], size: int) -> NDArray[np.int64]:
        rows = oy[:, None] + np.arange(size)[None, :] - self.y0
        cols = ox[:, None] + np.arange(size)[None, :] - self.x0
        rows = np.where((rows >= 0) & (rows < self.h), rows, -1)
        cols = np.where((cols >= 0) & (cols < self.w), cols, -1)
        flat = rows[:, :, None] * self.w + cols[:, None, :]
        return np.where((rows[:, :, None] >= 0) & (cols[:, None, :] >= 0), flat, -1)

    def add(self, first: int, flat: NDArray[np.int64], keep: NDArray[np.bool_],
            values: list[F32]) -> None:  # fmt: skip
        where = flat[keep]
        for k, value in enumerate(values):
            self.index_parts[first + k].append(where)
            self.value_parts[first + k].append(value[keep])

    def layer(self, k: int) -> F32:
        size = self.h * self.w
        if not self.index_parts[k]:
            return np.zeros((self.h, self.w), np.float32)
        idx = np.concatenate(self.index_parts[k])
        val = np.concatenate(self.value_parts[k])
        return np.bincount(idx, val, minlength=size).astype(np.float32).reshape(self.h, self.w)


def _round_size(half: NDArray[np.float32]) -> NDArray[np.int64]:
    return ((np.ceil(2 * half + 3) + 7) // 8 * 8).astype(np.int64)


def _nuclei(cells: CellTable, idx: NDArray[np.intp], scatter: _Scatter, tex: CellTextures) -> None:
    reach = np.abs(cells.part_dx[idx]) + np.abs(cells.part_dy[idx]) + cells.part_r[idx].max(2)
    sizes = _round_size(reach.max(1))
    for size in np.unique(sizes):
        sub = idx[sizes == size]
        ox, oy, gx, gy = _window_grid(cells.cx[sub], cells.cy[sub], int(size))
        n, s = len(sub), int(size)
        cover = np.zeros((n, s, s), np.float32)
        qpos = np.ones((n, s, s), np.float32)
        for p in range(cells.part_r.shape[1]):
            table = cells.part_r[sub, p]
            if not (table[:, 0] > 0).any():
                continue
            dx = gx[:, None, :] - cells.part_dx[sub, p][:, None, None]
            dy = gy[:, :, None] - cells.part_dy[sub, p][:, None, None]
            rho = np.sqrt(dx * dx + dy * dy)
            radius = _lookup(table, np.arctan2(dy, dx))
            part = np.clip(radius - rho + 0.5, 0.0, 1.0)
            better = part > cover
            cover = np.maximum(cover, part)
            qpos = np.where(better, rho / np.maximum(radius, 1e-3), qpos)
        chrom = _periodic(tex.chromatin, oy + cells.tex[sub, 1], ox + cells.tex[sub, 0], s)
        rim = cells.rim[sub][:, None, None]
        darkness = cells.density[sub][:, None, None] * (1 + rim * (np.minimum(qpos, 1) ** 4 - 0.35))
        darkness *= 1 + cells.chromatin[sub][:, None, None] * chrom
        nuc = cells.nucleolus[sub]
        ddx = gx[:, None, :] - nuc[:, 0, None, None]
        ddy = gy[:, :, None] - nuc[:, 1, None, None]
        darkness += nuc[:, 2, None, None] * np.exp(-(ddx * ddx + ddy * ddy) / 8.0)
        flat = scatter.index(oy, ox, s)
        keep = (flat >= 0) & (cover > 0)
        scatter.add(0, flat, keep, [cover, cover * darkness])


def _cytoplasm(
    cells: CellTable, idx: NDArray[np.intp], scatter: _Scatter, tex: CellTextures
) -> None:
    reach = np.abs(cells.cyto_dx[idx]) + np.abs(cells.cyto_dy[idx]) + cells.cyto_r[idx].max(1)
    sizes = _round_size(reach)
    for size in np.unique(sizes):
        sub = idx[sizes == size]
        ox, oy, gx, gy = _window_grid(cells.cx[sub], cells.cy[sub], int(size))
        s = int(size)
        dx = gx[:, None, :] - cells.cyto_dx[sub][:, None, None]
        dy = gy[:, :, None] - cells.cyto_dy[sub][:, None, None]
        rho = np.sqrt(dx * dx + dy * dy)
        radius = _lookup(cells.cyto_r[sub], np.arctan2(dy, dx))
        cover = np.clip(radius - rho + 0.5, 0.0, 1.0)
        q = rho / np.maximum(radius, 1e-3)
        par = cells.cyto_params[sub][:, :, None, None]  # alpha granular foamy hof hof_w ring_q lvl
        dens = 1 - par[:, 3] * np.exp(-((q / par[:, 4]) ** 2))
        dens *= np.where(q > par[:, 5], par[:, 6], 1.0)
        off_y, off_x = oy + cells.tex[sub, 0], ox + cells.tex[sub, 1]
        if (par[:, 1] > 0).any():
            dens *= 1 + par[:, 1] * _periodic(tex.granules, off_y, off_x, s)
        if (par[:, 2] > 0).any():
            dens *= 1 - par[:, 2] * _periodic(tex.vacuoles, off_y, off_x, s)
        alpha = cover * par[:, 0]
        col = cells.cyto_color[sub][:, :, None, None]
        flat = scatter.index(oy, ox, s)
        keep = (flat >= 0) & (cover > 0)
        weighted = alpha * dens
        scatter.add(
            2, flat, keep, [alpha, weighted * col[:, 0], weighted * col[:, 1], weighted * col[:, 2]]
        )


def render_cells(
    cells: CellTable, reach: F32, y0: int, x0: int, h: int, w: int, tex: CellTextures
) -> CellLayers:
    """Layers of the cells whose square (centre +- ``reach``) meets the block.

    ``cells`` must be sorted by ``cy`` (the layout sorts them).
    """
    margin = float(reach.max()) if len(reach) else 0.0
    lo, hi = np.searchsorted(cells.cy, [y0 - margin, y0 + h + margin])
    cand = np.arange(lo, hi)
    cx, cy, rr = cells.cx[cand], cells.cy[cand], reach[cand]
    hit = (cx + rr >= x0) & (cx - rr < x0 + w) & (cy + rr >= y0) & (cy - rr < y0 + h)
    idx = cand[hit]
    scatter = _Scatter(y0, x0, h, w, 6)
    with_nucleus = idx[cells.part_r[idx, 0, 0] > 0]
    with_cyto = idx[cells.cyto_r[idx, 0] > 0]
    if len(with_cyto):
        _cytoplasm(cells, with_cyto, scatter, tex)
    if len(with_nucleus):
        _nuclei(cells, with_nucleus, scatter, tex)
    return CellLayers(
        nucleus_alpha=np.minimum(scatter.layer(0), 1.0),
        nucleus_h=scatter.layer(1),
        cyto_alpha=np.minimum(scatter.layer(2), 1.0),
        cyto_h=scatter.layer(3),
        cyto_e=scatter.layer(4),
        cyto_r=scatter.layer(5),
    )
