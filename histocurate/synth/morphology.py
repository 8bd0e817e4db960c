"""How each cell type looks: nucleus size, shape, lobes, darkness, chromatin, cytoplasm.

Every nucleus (or lobe) is a star-shaped outline stored as its radius at ``N_ANGLES``
fixed angles around its centre. The renderer tests a pixel against the same table, and
the ground-truth polygon is built from it, so truth and pixels agree by construction.
Sizes are in micrometres and converted with the slide's mpp (0.25 um/px at 40x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from histocurate.labels import LABELS

N_ANGLES = 48
ANGLES = (-np.pi + 2.0 * np.pi * np.arange(N_ANGLES) / N_ANGLES).astype(np.float32)
MAX_PARTS = 4

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Style:
    """Look of one cell type (ranges are sampled uniformly per cell; lengths in um)."""

    length: Range  # nucleus (or lobe) major diameter
    aspect: Range  # minor / major
    shape: str = "ellipse"  # ellipse | spindle | kidney
    taper: float = 1.0  # spindle ends: 1 pointed, 0.25 blunt (cigar)
    irregular: float = 0.03  # amplitude of low-order outline harmonics
    spiky: float = 0.0  # amplitude of high-order harmonics (mitotic chromosomes)
    lobes: tuple[int, int] = (1, 1)
    density: Range = (1.0, 1.0)  # haematoxylin optical density at the centre
    chromatin: float = 0.2  # texture amplitude
    rim: float = 0.0  # darker nuclear membrane (vesicular nuclei)
    nucleolus: float = 0.0  # probability of a visible dark nucleolus
    cyto: Range = (0.0, 0.0)  # cytoplasm diameter (0: none drawn)
    cyto_aspect: Range = (0.8, 1.0)
    cyto_offset: float = 0.0  # nucleus eccentricity, fraction of the cytoplasm radius
    cyto_color: tuple[float, float, float] = (0.0, 0.2, 0.0)  # (H, E, R) concentrations
    cyto_alpha: float = 0.9
    granular: float = 0.0
    foamy: float = 0.0
    hof: float = 0.0  # pale zone at the cytoplasm centre (plasma-cell hof, RBC centre)
    hof_width: float = 0.4
    ring_q: float = 2.0  # beyond this fraction of the cytoplasm radius: a clear halo
    ring_level: float = 1.0
    nucleus: bool = True
    spindle_cyto: bool = False


STYLES: dict[str, Style] = {
    "cancer_cell": Style(
        length=(9.0, 15.5), aspect=(0.62, 0.95), irregular=0.09, density=(0.5, 0.78),
        chromatin=0.4, rim=0.55, nucleolus=0.7,
    ),
    "lymphocyte": Style(
        length=(5.6, 7.4), aspect=(0.85, 1.0), irregular=0.03, density=(1.25, 1.5),
        chromatin=0.15, rim=0.1,
    ),
    "fibroblast": Style(
        length=(12.0, 20.0), aspect=(0.13, 0.22), shape="spindle", taper=0.9,
        irregular=0.02, density=(0.9, 1.1), chromatin=0.15,
    ),
    "plasmocyte": Style(
        length=(5.5, 7.0), aspect=(0.85, 1.0), density=(1.0, 1.2), chromatin=0.45, rim=0.6,
        cyto=(10.0, 13.0), cyto_aspect=(0.65, 0.8), cyto_offset=0.42,
        cyto_color=(0.16, 0.32, 0.0), hof=0.75, hof_width=0.33,
    ),
    "eosinophil": Style(
        length=(4.0, 4.8), aspect=(0.75, 0.95), lobes=(2, 2), density=(1.05, 1.25),
        chromatin=0.15, cyto=(11.5, 13.5), cyto_color=(0.0, 0.62, 0.42), granular=0.6,
        cyto_alpha=0.95,
    ),
    "neutrophil": Style(
        length=(3.4, 4.0), aspect=(0.7, 0.9), lobes=(3, 4), density=(1.2, 1.4),
        chromatin=0.1, cyto=(10.0, 12.0), cyto_color=(0.03, 0.2, 0.02), granular=0.15,
    ),
    "macrophage": Style(
        length=(8.0, 10.5), aspect=(0.6, 0.8), shape="kidney", irregular=0.05,
        density=(0.45, 0.6), chromatin=0.3, rim=0.35, cyto=(18.0, 26.0),
        cyto_aspect=(0.7, 0.95), cyto_offset=0.25, cyto_color=(0.06, 0.2, 0.0), foamy=0.45,
        cyto_alpha=0.9,
    ),
    "smooth_muscle_cell": Style(
        length=(16.0, 24.0), aspect=(0.14, 0.2), shape="spindle", taper=0.25,
        density=(0.7, 0.85), chromatin=0.2, cyto=(30.0, 40.0), cyto_aspect=(0.16, 0.2),
        cyto_color=(0.02, 0.55, 0.0), spindle_cyto=True, cyto_alpha=0.6,
    ),
    "endothelial_cell": Style(
        length=(10.0, 14.0), aspect=(0.15, 0.22), shape="spindle", taper=0.6,
        density=(1.0, 1.2), chromatin=0.1,
    ),
    "red_blood_cell": Style(
        length=(0.0, 0.0), aspect=(1.0, 1.0), nucleus=False, cyto=(6.6, 7.6),
        cyto_aspect=(0.85, 1.0), cyto_color=(0.0, 0.55, 0.8), hof=0.35, hof_width=0.45,
        cyto_alpha=1.0,
    ),
    "epithelial_cell": Style(
        length=(8.0, 10.0), aspect=(0.5, 0.62), irregular=0.02, density=(0.85, 1.0),
        chromatin=0.2, rim=0.25,
    ),
    "mitotic_figure": Style(
        length=(8.0, 12.0), aspect=(0.3, 0.9), irregular=0.1, spiky=0.2,
        density=(1.9, 2.3), chromatin=0.45, cyto=(16.0, 20.0), cyto_color=(0.0, 0.08, 0.0),
        cyto_alpha=0.95,
    ),
    "apoptotic_body": Style(
        length=(3.2, 5.6), aspect=(0.85, 1.0), irregular=0.04, density=(1.9, 2.3),
        chromatin=0.05, cyto=(9.0, 12.0), cyto_color=(0.0, 0.85, 0.1), ring_q=0.72,
        ring_level=0.05, cyto_alpha=1.0,
    ),
}  # fmt: skip


@dataclass(slots=True)
class CellTable:
    """Cells of a slide as parallel arrays (level-0 pixels), ready for the renderer."""

    cx: NDArray[np.float64]
    cy: NDArray[np.float64]
    label: NDArray[np.int16]  # index into LABELS
    part_dx: NDArray[np.float32]  # (N, P) lobe centres relative to (cx, cy)
    part_dy: NDArray[np.float32]
    part_r: NDArray[np.float32]  # (N, P, N_ANGLES) outline radius; 0: no such part
    density: NDArray[np.float32]
    chromatin: NDArray[np.float32]
    rim: NDArray[np.float32]
    nucleolus: NDArray[np.float32]  # (N, 3): dx, dy, strength
    tex: NDArray[np.int32]  # (N, 2) texture offsets
    cyto_dx: NDArray[np.float32]
    cyto_dy: NDArray[np.float32]
    cyto_r: NDArray[np.float32]  # (N, N_ANGLES); 0 everywhere: no cytoplasm
    cyto_color: NDArray[np.float32]  # (N, 3) H, E, R
    cyto_params: NDArray[np.float32]  # (N, 7): alpha granular foamy hof hof_w ring_q ring_lvl
    extras: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cx)

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> CellTable:
        """A subset of the cells (same order as ``index``)."""
        values = {
            name: getattr(self, name)[index]
            for name in self.__dataclass_fields__
            if name != "extras"
        }
        return CellTable(**values, extras={k: v[index] for k, v in self.extras.items()})

    @staticmethod
    def concat(tables: list[CellTable]) -> CellTable:
        parts = max(t.part_r.shape[1] for t in tables)
        padded = [_pad_parts(t, parts) for t in tables]
        values = {
            name: np.concatenate([getattr(t, name) for t in padded])
            for name in CellTable.__dataclass_fields__
            if name != "extras"
        }
        keys = set.intersection(*(set(t.extras) for t in tables))
        extras = {k: np.concatenate([t.extras[k] for t in tables]) for k in sorted(keys)}
        return CellTable(**values, extras=extras)


def _pad_parts(table: CellTable, parts: int) -> CellTable:
    missing = parts - table.part_r.shape[1]
    if missing == 0:
        return table
    n = len(table)
    table.part_dx = np.concatenate([table.part_dx, np.zeros((n, missing), np.float32)], 1)
    table.part_dy = np.concatenate([table.part_dy, np.zeros((n, missing), np.float32)], 1)
    table.part_r = np.concatenate([table.part_r, np.zeros((n, missing, N_ANGLES), np.float32)], 1)
    return table


def _outline(
    rng: np.random.Generator,
    style: Style,
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    angle: NDArray[np.float64],
) -> NDArray[np.float32]:
    """Radius table (n, N_ANGLES) of outlines with semi-axes a, b (px) rotated by angle."""
    n = len(a)
    phi = ANGLES[None, :] - angle[:, None]
    cos, sin = np.cos(phi), np.sin(phi)
    if style.shape == "spindle":
        # half-width b * (1 - (u/a)^2)^taper: bisect the radius along each direction.
        lo, hi = np.zeros((n, N_ANGLES)), np.repeat(a[:, None], N_ANGLES, 1)
        for _ in range(22):
            mid = 0.5 * (lo + hi)
            u, v = mid * cos, mid * sin
            half = b[:, None] * np.clip(1.0 - (u / a[:, None]) ** 2, 0.0, 1.0) ** style.taper
            inside = np.abs(v) <= half
            lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
        radius = lo
    else:
        radius = (a * b)[:, None] / np.sqrt((b[:, None] * cos) ** 2 + (a[:, None] * sin) ** 2)
        if style.shape == "kidney":
            wrapped = np.angle(np.exp(1j * (phi - np.pi / 2)))
            radius *= 1.0 - 0.3 * np.exp(-((wrapped / 0.55) ** 2))
    factor = np.ones((n, N_ANGLES))
    for k in range(2, 6):
        amp = rng.normal(0.0, style.irregular / k**0.8, (n, 1))
        factor += amp * np.cos(k * ANGLES[None, :] + rng.uniform(0, 2 * np.pi, (n, 1)))
    if style.spiky:
        for k in range(6, 15):
            amp = rng.uniform(0.0, style.spiky, (n, 1)) / np.sqrt(k / 6)
            factor += amp * np.cos(k * ANGLES[None, :] + rng.uniform(0, 2 * np.pi, (n, 1)))
    return (radius * np.clip(factor, 0.45, 1.8)).astype(np.float32)


def make_cells(
    rng: np.random.Generator,
    label: str,
    cx: NDArray[np.float64],
    cy: NDArray[np.float64],
    angle: NDArray[np.float64],
    *,
    mpp: float,
    scale: float = 1.0,
) -> CellTable:
    """Cells of one type at the given centres and orientations (radians, image axes)."""
    style = STYLES[label]
    n = len(cx)
    px = 1.0 / mpp
    u = lambda r: rng.uniform(r[0], r[1], n)  # noqa: E731
    lobes = rng.integers(style.lobes[0], style.lobes[1] + 1, n)
    parts = int(style.lobes[1])
    part_dx = np.zeros((n, parts), np.float32)
    part_dy = np.zeros((n, parts), np.float32)
    part_r = np.zeros((n, parts, N_ANGLES), np.float32)
    if style.nucleus:
        length = u(style.length) * px * scale
        a, b = length / 2, length / 2 * u(style.aspect)
        if parts == 1:
            part_r[:, 0] = _outline(rng, style, a, b, angle)
        else:
            # lobes strung along a bent chain, overlapping a little (one outline in the end)
            step = 1.3 * a
            bend = rng.uniform(-0.5, 0.5, n)
            for p in range(parts):
                t = p - (lobes - 1) / 2.0
                along = t * step
                across = bend * (t**2) * step * 0.6
                part_dx[:, p] = along * np.cos(angle) - across * np.sin(angle)
                part_dy[:, p] = along * np.sin(angle) + across * np.cos(angle)
                lobe_angle = angle + rng.normal(0, 0.4, n)
                radius = _outline(rng, style, a, b, lobe_angle)
                part_r[:, p] = np.where((p < lobes)[:, None], radius, 0.0)
            centre_x = np.nanmean(np.where(part_r[:, :, 0] > 0, part_dx, np.nan), 1)
            centre_y = np.nanmean(np.where(part_r[:, :, 0] > 0, part_dy, np.nan), 1)
            part_dx -= centre_x[:, None].astype(np.float32)
            part_dy -= centre_y[:, None].astype(np.float32)
    cyto_r = np.zeros((n, N_ANGLES), np.float32)
    cyto_dx = np.zeros(n, np.float32)
    cyto_dy = np.zeros(n, np.float32)
    if style.cyto[1] > 0:
        diam = u(style.cyto) * px
        ca, cb = diam / 2, diam / 2 * u(style.cyto_aspect)
        cstyle = Style(
            length=(0, 0), aspect=(1, 1), irregular=0.05,
            shape="spindle" if style.spindle_cyto else "ellipse", taper=0.5,
        )  # fmt: skip
        cangle = angle if style.spindle_cyto else rng.uniform(0, 2 * np.pi, n)
        cyto_r = _outline(rng, cstyle, ca, cb, cangle)
        if style.cyto_offset:
            off = style.cyto_offset * cb
            direction = rng.uniform(0, 2 * np.pi, n)
            cyto_dx = (off * np.cos(direction)).astype(np.float32)
            cyto_dy = (off * np.sin(direction)).astype(np.float32)
    nucleolus = np.zeros((n, 3), np.float32)
    if style.nucleolus:
        r0 = part_r[:, 0].min(1) * 0.35
        direction = rng.uniform(0, 2 * np.pi, n)
        nucleolus[:, 0] = r0 * rng.uniform(0, 1, n) * np.cos(direction)
        nucleolus[:, 1] = r0 * rng.uniform(0, 1, n) * np.sin(direction)
        nucleolus[:, 2] = (rng.random(n) < style.nucleolus) * rng.uniform(0.5, 0.9, n)
    params = np.array(
        [style.cyto_alpha, style.granular, style.foamy, style.hof, style.hof_width,
         style.ring_q, style.ring_level],
        np.float32,
    )  # fmt: skip
    return CellTable(
        cx=np.asarray(cx, np.float64),
        cy=np.asarray(cy, np.float64),
        label=np.full(n, LABELS.index(label), np.int16),
        part_dx=part_dx,
        part_dy=part_dy,
        part_r=part_r,
        density=u(style.density).astype(np.float32),
        chromatin=np.full(n, style.chromatin, np.float32),
        rim=np.full(n, style.rim, np.float32),
        nucleolus=nucleolus,
        tex=rng.integers(0, 4096, (n, 2)).astype(np.int32),
        cyto_dx=cyto_dx,
        cyto_dy=cyto_dy,
        cyto_r=cyto_r,
        cyto_color=np.tile(np.asarray(style.cyto_color, np.float32), (n, 1)),
        cyto_params=np.tile(params, (n, 1)),
    )


def cell_radius(cells: CellTable) -> NDArray[np.float32]:
    """Mean outline radius of each cell's nucleus (its cytoplasm when it has no nucleus)."""
    nucleus = cells.part_r.max(axis=1).mean(axis=1)
    return np.where(nucleus > 0, nucleus, cells.cyto_r.mean(axis=1)).astype(np.float32)


def extent(cells: CellTable) -> NDArray[np.float32]:
    """Half-size of a square around each centre holding the nucleus and cytoplasm."""
    reach = np.abs(cells.part_dx) + np.abs(cells.part_dy) + cells.part_r.max(axis=2)
    nucleus = reach.max(axis=1)
    cyto = np.abs(cells.cyto_dx) + np.abs(cells.cyto_dy) + cells.cyto_r.max(axis=1)
    return np.maximum(nucleus, cyto).astype(np.float32) + 2.0
