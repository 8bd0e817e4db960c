"""The layout of one synthetic slide: tissue pieces, microenvironments, foci, structures.

Fields on a coarse grid (one value per 32 level-0 px) say where tissue is and how much of
each zone (`profiles.ZONES`) a place holds; fine fields (8 px) hold lumens of glands and
vessels. Rare cell types live where real ones do: eosinophils, neutrophils and macrophages
in foci, mitoses and apoptotic bodies in proliferative hotspots of the tumour, endothelium
on vessels (always with red blood cells inside), epithelium in clusters of normal glands.
So tiles with a rare type are few, clustered, and look different, as in real tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from histocurate.synth.morphology import CellTable, extent
from histocurate.synth.noise import sample_points, smooth_noise, smoothstep
from histocurate.synth.placement import Structures, lattice_cells, prune, structure_cells
from histocurate.synth.profiles import ZONE_SPECS, ZONES, Profile, Stain, profile_for, stain_for

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
COARSE = 32
FINE = 8
# Gaussian sigma of an inflammatory focus (um): its dense core (g > 0.4) is ~70-175 um
# across, one or a few 112 um tiles, as eosinophil or neutrophil clusters are.
FOCUS_SIGMA_UM = (25.0, 65.0)


@dataclass(slots=True)
class SlideModel:
    """Everything the renderer needs to draw any block of a slide."""

    width: int
    height: int
    mpp: float
    seed: int
    tissue: F32  # coarse, > 0 inside tissue (about level-0 px from the edge)
    zones: F32  # (len(ZONES), coarse) weights
    bg_e: F32  # (5, coarse) eosin coefficients of the background textures
    bg_h: F32
    loose: F32  # coarse, share of loose (pale) stroma
    cos_t: F32  # coarse, fibre orientation
    sin_t: F32
    lumen: F32  # fine, > 0 inside empty lumens
    vessel: F32  # fine, > 0 inside vessel lumens
    band: F32  # fine, 0-1 epithelial cytoplasm around glands
    cells: CellTable  # sorted by cy
    reach: F32
    stain: Stain


def _grid(height: int, width: int, cell: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    ys = (np.arange(height // cell + 2) + 0.5) * cell
    xs = (np.arange(width // cell + 2) + 0.5) * cell
    return np.meshgrid(ys, xs, indexing="ij")


def _tissue(rng: np.random.Generator, yy: F64, xx: F64, width: int, height: int, mpp: float) -> F32:
    """A few irregular tissue pieces with holes; about 45-70% of the slide."""
    field = np.full(yy.shape, -2.0)
    pieces = [(0.25, 0.45)] * int(rng.integers(1, 4)) + [(0.06, 0.14)] * int(rng.integers(0, 3))
    for lo, hi in pieces:
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        a, b = rng.uniform(lo, hi, 2) * np.array([width, height])
        ang = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        field = np.maximum(field, 1 - np.sqrt((u / a) ** 2 + (v / b) ** 2))
    cells_per_100um = 100 / (COARSE * mpp)
    field += 0.3 * smooth_noise(rng, yy.shape, 2.0 * cells_per_100um)
    field += 0.08 * smooth_noise(rng, yy.shape, 0.4 * cells_per_100um)
    for _ in range(int(rng.integers(1, 5))):  # holes: tears, fat
        hy, hx = rng.uniform(0, height), rng.uniform(0, width)
        rad = rng.uniform(30, 120) / mpp
        dist2 = ((yy - hy) ** 2 + (xx - hx) ** 2) / (2 * rad**2)
        dist2 *= np.exp(0.5 * smooth_noise(rng, yy.shape, 0.5 * cells_per_100um))  # irregular
        field -= 1.5 * smoothstep(np.exp(-dist2), 0.3, 0.7)
    field -= np.quantile(field, 1 - rng.uniform(0.45, 0.7))
    return (field * 0.6 * min(width, height)).astype(np.float32)


def _bumps(
    rng: np.random.Generator,
    weight: F32,
    count: int,
    yy: F64,
    xx: F64,
    radius_px: tuple[float, float],
) -> tuple[F32, F64]:
    """Gaussian hotspots centred on coarse cells drawn with probability ~ ``weight``."""
    out: F32 = np.zeros(weight.shape, np.float32)
    total = weight.sum()
    if count <= 0 or total <= 0:
        return out, np.zeros((0, 2), np.float64)
    picks = rng.choice(weight.size, size=count, p=(weight / total).ravel())
    centres: F64 = np.stack([yy.ravel()[picks], xx.ravel()[picks]], 1)
    centres += rng.uniform(-COARSE / 2, COARSE / 2, centres.shape)
    for cy, cx in centres:
        rad = rng.uniform(*radius_px)
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rad**2))
        out = np.maximum(out, smoothstep(g, 0.2, 0.6))
    return out, centres


def _zones(
    rng: np.random.Generator, prof: Profile, tissue: F32, yy: F64, xx: F64, mpp: float
) -> tuple[F32, F32, F32, float]:
    inside = tissue > 0
    cells_per_100um = 100 / (COARSE * mpp)
    mm2_per_cell = (COARSE * mpp / 1000) ** 2
    tissue_mm2 = float(inside.sum() * mm2_per_cell)

    def level(noise: F32, share: float) -> float:
        return float(np.quantile(noise[inside], 1 - np.clip(share, 0.001, 0.999)))

    nt = smooth_noise(rng, tissue.shape, 1.1 * cells_per_100um)
    nt += 0.35 * smooth_noise(rng, tissue.shape, 0.3 * cells_per_100um)
    thr = level(nt, prof.tumour * rng.uniform(0.7, 1.3))
    tumour = smoothstep(nt, thr - 0.08, thr + 0.08)
    necrosis = np.zeros_like(tumour)
    if rng.random() < prof.necrosis_p:
        thr_n = level(nt, prof.tumour * rng.uniform(0.1, 0.25))
        necrosis = smoothstep(nt, thr_n, thr_n + 0.12)
        tumour = np.clip(tumour - necrosis, 0, 1)
    ni = smooth_noise(rng, tissue.shape, 0.8 * cells_per_100um)
    thr_i = level(ni, prof.inflam)
    free = np.clip(1 - tumour - necrosis, 0, 1)
    edge = 4 * tumour * (1 - tumour)
    inflam = np.clip(smoothstep(ni, thr_i, thr_i + 0.2) + 0.5 * edge, 0, 1) * free
    nm = smooth_noise(rng, tissue.shape, (0.6 * cells_per_100um, 3 * cells_per_100um))
    thr_m = level(nm, prof.muscle)
    muscle = smoothstep(nm, thr_m, thr_m + 0.15) * np.clip(free - inflam, 0, 1)
    stroma_like = np.clip(1 - tumour - necrosis - muscle, 0, 1) * inside
    foci = {}
    radius = (FOCUS_SIGMA_UM[0] / mpp, FOCUS_SIGMA_UM[1] / mpp)
    prefs = {
        "eos_focus": (prof.eos_p, stroma_like),
        "neut_focus": (prof.neut_p, 3 * necrosis + edge + 0.3 * stroma_like),
        "macro_focus": (prof.macro_p, stroma_like + 0.3 * necrosis),
    }
    for name, (p, pref) in prefs.items():
        count = max(1, rng.poisson(prof.focus_rate * tissue_mm2)) if rng.random() < p else 0
        foci[name], _ = _bumps(rng, pref * inside, count, yy, xx, radius)
    focus_total = np.clip(sum(foci.values()), 0, 1)
    keep = 1 - focus_total
    weights = {
        "tumour": tumour * keep, "inflam": inflam * keep, "necrosis": necrosis * keep,
        "muscle": muscle * keep, **foci,
    }  # fmt: skip
    weights["stroma"] = np.clip(1 - sum(weights.values()), 0, 1)
    zones = np.stack([weights[z] for z in ZONES]).astype(np.float32)
    prolif = np.zeros_like(tumour)
    if rng.random() < prof.prolif_p:
        tumour_mm2 = float(tumour.sum() * mm2_per_cell)
        count = max(1, rng.poisson(1.5 * tumour_mm2))
        prolif, _ = _bumps(rng, tumour**2 * inside, count, yy, xx, (50 / mpp, 100 / mpp))
    vascular = np.zeros_like(tumour)
    if rng.random() < prof.vascular_p:
        count = max(1, rng.poisson(1.5 * tissue_mm2))
        vascular, _ = _bumps(rng, stroma_like * inside, count, yy, xx, (60 / mpp, 130 / mpp))
    return zones, prolif, vascular, tissue_mm2


def build_slide(
    *, indication: str, cohort: str, width: int, height: int, mpp: float, seed: int
) -> SlideModel:
    """Lay out one slide (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    prof = profile_for(indication)
    yy, xx = _grid(height, width, COARSE)
    tissue = _tissue(rng, yy, xx, width, height, mpp)
    zones, prolif, vascular, tissue_mm2 = _zones(rng, prof, tissue, yy, xx, mpp)
    cells_per_100um = 100 / (COARSE * mpp)
    theta = rng.uniform(0, np.pi) + 1.3 * smooth_noise(rng, tissue.shape, 0.8 * cells_per_100um)
    bg_e = np.einsum("zyx,zk->kyx", zones, np.array([ZONE_SPECS[z].bg_e for z in ZONES]))
    bg_h = np.einsum("zyx,zk->kyx", zones, np.array([ZONE_SPECS[z].bg_h for z in ZONES]))
    loose = np.einsum("zyx,z->yx", zones, np.array([ZONE_SPECS[z].loose for z in ZONES]))

    fine_shape = (height // FINE + 2, width // FINE + 2)
    structures = Structures.empty(fine_shape)
    inside = (tissue > 0).astype(np.float32)
    stroma_like = (zones[ZONES.index("stroma")] + zones[ZONES.index("inflam")]) * inside
    stroma_like += zones[ZONES.index("muscle")] * inside
    sites = {
        "vessels": (
            stroma_like * (0.05 + 6 * vascular) + 0.03 * zones[ZONES.index("tumour")] * inside,
            rng.poisson(prof.vessels * tissue_mm2 * (1 + 2 * vascular.mean())),
        ),
        "glands": (
            stroma_like,
            (
                max(1, rng.poisson(prof.gland_rate * tissue_mm2))
                if rng.random() < prof.glands_p
                else 0
            ),
        ),
        "tumour_lumens": (
            zones[ZONES.index("tumour")] ** 2 * inside,
            rng.poisson(prof.tumour_lumens * tissue_mm2 * prof.tumour),
        ),
    }
    for kind, (weight, count) in sites.items():
        total = float(weight.sum())
        if count and total > 0:
            picks = rng.choice(weight.size, size=int(count), p=(weight / total).ravel())
            centres = np.stack([xx.ravel()[picks], yy.ravel()[picks]], 1)
            centres += rng.uniform(-COARSE / 2, COARSE / 2, centres.shape)
            structures.add(kind, centres, rng, mpp=mpp, fine=FINE)
    lattice = lattice_cells(
        rng, zones=zones, tissue=tissue, prolif=prolif, structures=structures,
        theta=theta.astype(np.float32), width=width, height=height, mpp=mpp,
        coarse=COARSE, fine=FINE, tumour_scale=prof.tumour_scale,
    )  # fmt: skip
    built = structure_cells(rng, structures, mpp=mpp)
    cells = prune(CellTable.concat([built, lattice]) if len(built) else lattice, rng)
    reach = extent(cells)
    ok = (cells.cx - reach >= 0) & (cells.cy - reach >= 0)
    ok &= (cells.cx + reach < width) & (cells.cy + reach < height)
    # no cell outside tissue (a vessel or gland placed near an edge)
    ok &= sample_points(tissue, COARSE, cells.cx, cells.cy) > 0
    cells = cells.take(ok)
    cells = cells.take(np.argsort(cells.cy, kind="stable"))
    return SlideModel(
        width=width, height=height, mpp=mpp, seed=seed, tissue=tissue, zones=zones,
        bg_e=bg_e.astype(np.float32), bg_h=bg_h.astype(np.float32),
        loose=loose.astype(np.float32), cos_t=np.cos(theta).astype(np.float32),
        sin_t=np.sin(theta).astype(np.float32), lumen=structures.lumen,
        vessel=structures.vessel, band=structures.band, cells=cells, reach=extent(cells),
        stain=stain_for(cohort, rng),
    )  # fmt: skip
