"""What differs between indications, microenvironments and cohorts (sites).

Zones are the microenvironments of the layout; each has a cell spacing, a packing (share
of lattice sites that hold a cell) and a mix of cell types. Indications change how much of
each zone a slide has and how often rare-cell foci occur; cohorts change the stain, as
scanners and labs do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

ZONES: tuple[str, ...] = (
    "stroma", "tumour", "inflam", "necrosis", "muscle", "eos_focus", "neut_focus", "macro_focus",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Zone:
    """A microenvironment: lattice spacing (um), packing, type mix, background stain."""

    spacing: float
    packing: float
    mix: dict[str, float]
    # background concentrations: constant, fibres, mottle, fibrils, dust (E then H) + loose
    bg_e: tuple[float, float, float, float, float]
    bg_h: tuple[float, float, float, float, float]
    loose: float = 0.0


ZONE_SPECS: dict[str, Zone] = {
    "stroma": Zone(
        11.0, 0.2,
        {"fibroblast": 0.72, "lymphocyte": 0.14, "plasmocyte": 0.06, "macrophage": 0.004,
         "eosinophil": 0.002, "neutrophil": 0.002, "smooth_muscle_cell": 0.06},
        (0.3, 0.45, 0.06, 0.0, 0.0), (0.035, 0.0, 0.01, 0.0, 0.0), loose=0.5,
    ),
    "tumour": Zone(
        12.5, 0.92,
        {"cancer_cell": 0.95, "lymphocyte": 0.03, "fibroblast": 0.012,
         "mitotic_figure": 0.0015, "apoptotic_body": 0.0015},
        (0.3, 0.0, 0.06, 0.0, 0.0), (0.13, 0.0, 0.03, 0.0, 0.0),
    ),
    "inflam": Zone(
        8.6, 0.85,
        {"lymphocyte": 0.74, "plasmocyte": 0.18, "fibroblast": 0.05, "macrophage": 0.006,
         "eosinophil": 0.003, "neutrophil": 0.003},
        (0.12, 0.3, 0.04, 0.0, 0.0), (0.05, 0.0, 0.01, 0.0, 0.0), loose=0.4,
    ),
    "necrosis": Zone(
        11.0, 0.28,
        {"apoptotic_body": 0.2, "neutrophil": 0.25, "lymphocyte": 0.3, "cancer_cell": 0.25},
        (0.5, 0.0, 0.1, 0.0, 0.0), (0.06, 0.0, 0.02, 0.0, 0.5),
    ),
    "muscle": Zone(
        10.0, 0.7,
        {"smooth_muscle_cell": 0.9, "fibroblast": 0.06, "lymphocyte": 0.04},
        (0.42, 0.0, 0.05, 0.22, 0.0), (0.06, 0.0, 0.01, 0.0, 0.0),
    ),
    "eos_focus": Zone(
        10.0, 0.8,
        {"eosinophil": 0.6, "lymphocyte": 0.2, "plasmocyte": 0.12, "fibroblast": 0.08},
        (0.12, 0.3, 0.04, 0.0, 0.0), (0.04, 0.0, 0.01, 0.0, 0.0), loose=0.3,
    ),
    "neut_focus": Zone(
        9.0, 0.82,
        {"neutrophil": 0.78, "lymphocyte": 0.08, "macrophage": 0.04, "apoptotic_body": 0.02,
         "fibroblast": 0.08},
        (0.38, 0.0, 0.1, 0.0, 0.0), (0.05, 0.0, 0.01, 0.0, 0.25),
    ),
    "macro_focus": Zone(
        17.0, 0.85,
        {"macrophage": 0.7, "lymphocyte": 0.18, "plasmocyte": 0.07, "neutrophil": 0.05},
        (0.08, 0.05, 0.03, 0.0, 0.0), (0.02, 0.0, 0.005, 0.0, 0.0), loose=0.5,
    ),
}  # fmt: skip

PROLIF_MIX = {"mitotic_figure": 0.09, "apoptotic_body": 0.08}
"""Share of tumour cells replaced in a proliferative hotspot (at its centre)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """Per-indication layout: zone fractions of the tissue and rates of rare structures.

    ``*_p`` are probabilities that a slide has the feature at all; rates are per mm^2 of
    tissue (foci, clusters) so a larger slide has more of them. The focus and gland rates
    keep rare types rare, as in real cohorts: measured on 24 slides of 16384 px, each rare
    type is 0.3-1.6% of the nuclei and present in 2-16% of the tiles (eosinophils 0.5%,
    neutrophils 1.1%, macrophages 0.4%, normal epithelium 0.6%, endothelium 1.6%).
    """

    tumour: float
    inflam: float
    muscle: float
    necrosis_p: float
    vessels: float = 14.0
    vascular_p: float = 0.6
    glands_p: float = 0.3
    tumour_lumens: float = 0.0
    eos_p: float = 0.35
    neut_p: float = 0.35
    macro_p: float = 0.35
    prolif_p: float = 0.5
    focus_rate: float = 0.6
    gland_rate: float = 0.4
    tumour_scale: float = 1.0
    extra: dict[str, float] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "LUAD": Profile(0.32, 0.2, 0.02, 0.15, glands_p=0.5, tumour_lumens=30, macro_p=0.8,
                    neut_p=0.4, eos_p=0.35),
    "LUSC": Profile(0.45, 0.12, 0.02, 0.5, neut_p=0.7, prolif_p=0.6, tumour_scale=1.1),
    "COAD": Profile(0.33, 0.1, 0.12, 0.4, glands_p=0.9, tumour_lumens=40, neut_p=0.6,
                    eos_p=0.45),
    "MESO": Profile(0.3, 0.06, 0.1, 0.15, vessels=10.0, macro_p=0.4, tumour_scale=0.95),
    "BLCA": Profile(0.4, 0.1, 0.16, 0.25, eos_p=0.75, prolif_p=0.55),
    "PAAD": Profile(0.2, 0.06, 0.04, 0.2, glands_p=0.55, tumour_lumens=35, neut_p=0.5),
    "OV": Profile(0.45, 0.06, 0.03, 0.35, prolif_p=0.8, macro_p=0.45, tumour_scale=1.15),
    "BRCA": Profile(0.35, 0.12, 0.02, 0.2, glands_p=0.6, tumour_lumens=15, prolif_p=0.6),
}  # fmt: skip
DEFAULT_PROFILE = Profile(0.35, 0.1, 0.05, 0.25)


def profile_for(indication: str) -> Profile:
    return PROFILES.get(indication.upper(), DEFAULT_PROFILE)


@dataclass(frozen=True, slots=True)
class Stain:
    """Optical density per unit concentration of each dye (RGB), plus the glass."""

    h: NDArray[np.float32]
    e: NDArray[np.float32]
    r: NDArray[np.float32]
    glass: NDArray[np.float32]


_BASE = {
    "h": (0.62, 0.78, 0.34),
    "e": (0.10, 0.95, 0.42),
    "r": (0.06, 0.95, 1.05),
    "glass": (0.035, 0.045, 0.035),
}
COHORT_SHIFTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "synth-a": {},
    "synth-b": {"h": (0.95, 1.05, 1.25), "e": (0.95, 0.85, 0.85)},  # bluer, paler eosin
    "synth-c": {"h": (1.12, 1.05, 0.9), "e": (1.15, 1.1, 1.2), "glass": (1.0, 1.5, 2.2)},
}
COHORTS: tuple[str, ...] = tuple(COHORT_SHIFTS)


def stain_for(cohort: str, rng: np.random.Generator) -> Stain:
    """The cohort's stain, with a small per-slide jitter (staining batches differ)."""
    shift = COHORT_SHIFTS.get(cohort, {})
    values: dict[str, NDArray[np.float32]] = {}
    for name, base in _BASE.items():
        scale = np.asarray(shift.get(name, (1.0, 1.0, 1.0)))
        jitter = rng.normal(1.0, 0.03, 3) if name != "glass" else np.ones(3)
        values[name] = (np.asarray(base) * scale * jitter).astype(np.float32)
    return Stain(**values)
