"""Where cells go: structures (vessels, glands, lumens), zone lattices, overlap pruning.

Zone cells sit on a jittered hexagonal lattice whose spacing is the zone's (dense for
lymphoid infiltrates, sparse for stroma), so packing is realistic and nuclei barely
overlap; structure cells are placed along their vessel or gland. A final pass drops the
lesser of two cells that overlap (structure cells win).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from histocurate.labels import LABELS
from histocurate.synth.morphology import CellTable, cell_radius, make_cells
from histocurate.synth.noise import sample_points
from histocurate.synth.profiles import PROLIF_MIX, ZONE_SPECS, ZONES

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
SPINDLE = {"fibroblast", "smooth_muscle_cell"}


@dataclass(slots=True)
class Structures:
    """Fine fields of lumens and the cells placed along structures."""

    lumen: F32
    vessel: F32
    band: F32
    placed: dict[str, list[tuple[float, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Structures:
        return cls(
            lumen=np.full(shape, -100, np.float32),
            vessel=np.full(shape, -100, np.float32),
            band=np.zeros(shape, np.float32),
        )

    def _stamp(self, target: F32, cx: float, cy: float, a: float, b: float, ang: float,
               fine: int, band: float = 0.0) -> None:  # fmt: skip
        """Max-combine an ellipse's signed distance (px, > 0 inside) into a fine field."""
        reach = (a + band + 2 * fine) / fine
        i0, i1 = max(int(cy / fine - reach), 0), min(int(cy / fine + reach) + 2, target.shape[0])
        j0, j1 = max(int(cx / fine - reach), 0), min(int(cx / fine + reach) + 2, target.shape[1])
        if i0 >= i1 or j0 >= j1:
            return
        ys = (np.arange(i0, i1) + 0.5) * fine - cy
        xs = (np.arange(j0, j1) + 0.5) * fine - cx
        u = xs[None, :] * np.cos(ang) + ys[:, None] * np.sin(ang)
        v = -xs[None, :] * np.sin(ang) + ys[:, None] * np.cos(ang)
        sdf = ((1 - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * b).astype(np.float32)
        if band:
            ring = np.clip(1 - np.abs(sdf + band / 2) / (band / 2), 0, 1) ** 0.5
            self.band[i0:i1, j0:j1] = np.maximum(self.band[i0:i1, j0:j1], ring)
        else:
            target[i0:i1, j0:j1] = np.maximum(target[i0:i1, j0:j1], sdf)

    def _ring(self, label: str, cx: float, cy: float, a: float, b: float, ang: float,
              spacing: float, radial: bool, rng: np.random.Generator) -> None:  # fmt: skip
        """Cells along an ellipse (semi-axes a, b), tangent or radial."""
        perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
        n = max(2, round(perimeter / spacing))
        t = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n + rng.normal(0, 0.05, n)
        x, y = a * np.cos(t), b * np.sin(t)
        tangent = np.arctan2(b * np.cos(t), -a * np.sin(t)) + ang
        for xi, yi, ti in zip(x, y, tangent, strict=True):
            px = cx + xi * np.cos(ang) - yi * np.sin(ang)
            py = cy + xi * np.sin(ang) + yi * np.cos(ang)
            self.placed[label].append((px, py, ti + (np.pi / 2 if radial else 0.0)))

    def add(self, kind: str, centres: F64, rng: np.random.Generator, *, mpp: float,
            fine: int) -> None:  # fmt: skip
        um = 1 / mpp
        for cx, cy in centres:
            if kind == "vessels":
                b = float(np.clip(rng.lognormal(np.log(6.5), 0.35), 4.5, 18)) * um
                a = min(b / rng.uniform(0.45, 1.0), 26 * um)
                ang = rng.uniform(0, np.pi)
                self._stamp(self.vessel, cx, cy, a, b, ang, fine)
                self._ring("endothelial_cell", cx, cy, a + 1.5 * um, b + 1.5 * um, ang,
                           13 * um, False, rng)  # fmt: skip
                self._rbc(cx, cy, a, b, ang, rng, um)
                for k, extra in enumerate((6.0, 11.5)):
                    if b > (8.5 + 5 * k) * um:
                        self._ring("smooth_muscle_cell", cx, cy, a + extra * um, b + extra * um,
                                   ang, 16 * um, False, rng)  # fmt: skip
            elif kind == "glands":
                self._gland_cluster(cx, cy, rng, um, fine)
            elif kind == "tumour_lumens":
                b = rng.uniform(5, 20) * um
                self._stamp(self.lumen, cx, cy, b / rng.uniform(0.5, 1), b, rng.uniform(0, np.pi),
                            fine)  # fmt: skip

    def _rbc(self, cx: float, cy: float, a: float, b: float, ang: float,
             rng: np.random.Generator, um: float) -> None:  # fmt: skip
        step = 6.6 * um
        ia, ib = max(a - 3.0 * um, 0), max(b - 3.0 * um, 0)
        ys = np.arange(-ib, ib + 1e-6, step * 0.87)
        pts = []
        for row, y in enumerate(ys):
            xs = np.arange(-ia, ia + 1e-6, step) + (step / 2 if row % 2 else 0)
            for x in xs:
                x2, y2 = x + rng.uniform(-0.6, 0.6) * um, y + rng.uniform(-0.6, 0.6) * um
                inside = ia == 0 or (x2 / max(ia, 1)) ** 2 + (y2 / max(ib, 1)) ** 2 <= 1.0
                if inside and rng.random() < 0.92:
                    pts.append((x2, y2))
        if not pts:
            pts = [(0.0, 0.0)]
        for x, y in pts:
            px = cx + x * np.cos(ang) - y * np.sin(ang)
            py = cy + x * np.sin(ang) + y * np.cos(ang)
            self.placed["red_blood_cell"].append((px, py, 0.0))

    def _gland_cluster(self, cx: float, cy: float, rng: np.random.Generator, um: float,
                       fine: int) -> None:  # fmt: skip
        glands: list[tuple[float, float, float]] = []
        spread = rng.uniform(60, 200) * um
        for _ in range(int(rng.integers(4, 13)) * 4):
            if len(glands) >= 12:
                break
            b = rng.uniform(12, 30) * um
            a = b / rng.uniform(0.55, 0.95)
            gx, gy = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
            if any(np.hypot(gx - x, gy - y) < a + r + 30 * um for x, y, r in glands):
                continue
            glands.append((gx, gy, a))
            ang = rng.uniform(0, np.pi)
            self._stamp(self.lumen, gx, gy, a, b, ang, fine)
            self._stamp(self.band, gx, gy, a, b, ang, fine, band=18 * um)
            self._ring("epithelial_cell", gx, gy, a + 9 * um, b + 9 * um, ang, 6.3 * um, True, rng)


def _hex_sites(rng: np.random.Generator, width: int, height: int, spacing: float) -> F64:
    rows = np.arange(0.5, height / (spacing * 0.866) + 1) * spacing * 0.866
    cols = np.arange(0.5, width / spacing + 1) * spacing
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    xx = xx + (np.arange(len(rows)) % 2)[:, None] * spacing / 2
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    return pts + rng.uniform(-0.22, 0.22, pts.shape) * spacing


def lattice_cells(
    rng: np.random.Generator, *, zones: F32, tissue: F32, prolif: F32, structures: Structures,
    theta: F32, width: int, height: int, mpp: float, coarse: int, fine: int, tumour_scale: float,
) -> CellTable:  # fmt: skip
    """Cells of every zone on its own jittered hexagonal lattice."""
    xs, ys, labels, angles = [], [], [], []
    for z, name in enumerate(ZONES):
        spec = ZONE_SPECS[name]
        if zones[z].max() <= 0.01:
            continue
        pts = _hex_sites(rng, width, height, spec.spacing / mpp)
        x, y = pts[:, 0], pts[:, 1]
        w = sample_points(zones[z], coarse, x, y) * spec.packing
        keep = rng.random(len(x)) < w
        x, y = x[keep], y[keep]
        ok = sample_points(tissue, coarse, x, y) > 4
        ok &= sample_points(structures.lumen, fine, x, y) < -6 / mpp
        ok &= sample_points(structures.vessel, fine, x, y) < -6 / mpp
        ok &= sample_points(structures.band, fine, x, y) < 0.2
        x, y = x[ok], y[ok]
        names = list(spec.mix)
        p = np.array([spec.mix[k] for k in names])
        label = np.asarray(names)[rng.choice(len(names), size=len(x), p=p / p.sum())]
        if name == "tumour":
            hot = sample_points(prolif, coarse, x, y)
            u = rng.random(len(x))
            edge = 0.0
            for rare, share in PROLIF_MIX.items():
                label = np.where((u >= edge * hot) & (u < (edge + share) * hot), rare, label)
                edge += share
        xs.append(x)
        ys.append(y)
        labels.append(label)
        angles.append(sample_points(theta, coarse, x, y) + rng.normal(0, 0.25, len(x)))
    x, y = np.concatenate(xs), np.concatenate(ys)
    label, angle = np.concatenate(labels), np.concatenate(angles)
    tables = []
    for name in LABELS:
        sel = label == name
        if not sel.any():
            continue
        ang = angle[sel] if name in SPINDLE else rng.uniform(0, 2 * np.pi, int(sel.sum()))
        scale = tumour_scale if name == "cancer_cell" else 1.0
        table = make_cells(rng, name, x[sel], y[sel], ang, mpp=mpp, scale=scale)
        table.extras["priority"] = np.ones(len(table))
        tables.append(table)
    return CellTable.concat(tables)


def structure_cells(rng: np.random.Generator, structures: Structures, *, mpp: float) -> CellTable:
    """Cells placed along vessels and glands (priority over lattice cells)."""
    tables = []
    for name in LABELS:
        placed = structures.placed.get(name)
        if not placed:
            continue
        arr = np.asarray(placed, np.float64)
        table = make_cells(rng, name, arr[:, 0], arr[:, 1], arr[:, 2], mpp=mpp)
        table.extras["priority"] = np.full(len(table), 3.0)
        tables.append(table)
    if not tables:
        return make_cells(rng, "lymphocyte", np.zeros(0), np.zeros(0), np.zeros(0), mpp=mpp)
    return CellTable.concat(tables)


def prune(cells: CellTable, rng: np.random.Generator, *, rounds: int = 3) -> CellTable:
    """Drop cells overlapping a cell of higher priority (or a random one of equal priority)."""
    rbc = LABELS.index("red_blood_cell")
    for _ in range(rounds):
        if len(cells) < 2:
            return cells
        radius = cell_radius(cells).astype(np.float64)
        pos = np.stack([cells.cx, cells.cy], 1)
        pairs = cKDTree(pos).query_pairs(2 * radius.max(), output_type="ndarray")
        if not len(pairs):
            return cells
        i, j = pairs[:, 0], pairs[:, 1]
        dist = np.hypot(*(pos[i] - pos[j]).T)
        both_rbc = (cells.label[i] == rbc) & (cells.label[j] == rbc)
        limit = np.where(both_rbc, 0.55, 0.78) * (radius[i] + radius[j])
        clash = dist < limit
        if not clash.any():
            return cells
        i, j = i[clash], j[clash]
        prio = cells.extras.get("priority", np.ones(len(cells))) + rng.random(len(cells)) * 0.5
        loser = np.where(prio[i] >= prio[j], j, i)
        keep = np.ones(len(cells), bool)
        keep[loser] = False
        cells = cells.take(keep)
    return cells
