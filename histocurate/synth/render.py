"""Render any block of a synthetic slide to RGB, from its layout and cells.

Colour is built the way light passes through a stained section: each pixel holds
concentrations of haematoxylin (H), eosin (E) and a red pigment (R: red blood cells,
eosinophil granules); optical density is their sum along each dye's absorption vector,
and RGB = 255 * exp(-OD). So colour deconvolution with the same vectors recovers the
concentrations, and the images have the colour statistics of real H&E.

Speed: smooth layout fields are read at a quarter of the resolution and broadcast over
4 x 4 pixel cells (arrays are handled as (h/4, 4, w/4, 4)); fine textures are periodic
512 px patterns, so a 512-aligned block reads them without copying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from histocurate.synth.cells_render import CellTextures, render_cells
from histocurate.synth.layout import COARSE, FINE, SlideModel
from histocurate.synth.noise import (
    oriented_noise,
    periodic_noise,
    ramp,
    sample_stack,
    smoothstep,
)
from histocurate.synth.profiles import Stain

F32 = NDArray[np.float32]
Q = 4  # coarse fields are evaluated once per Q x Q pixels
PERIOD = 512


@dataclass(frozen=True, slots=True)
class Textures:
    """Periodic textures shared by every block of a slide."""

    speckle: F32
    mottle: F32
    warp: F32
    fibres: F32  # (4, P, P) collagen streaks at 0, 45, 90, 135 degrees
    fibrils: F32  # (4, P, P) finer streaks (smooth muscle)
    cleft: F32  # loose-stroma gaps
    dust: F32  # nuclear dust of necrosis
    cells: CellTextures


def make_textures(seed: int) -> Textures:
    rng = np.random.default_rng([seed, 7])
    vac = periodic_noise(rng, 256, 1.3)
    speckle = periodic_noise(rng, PERIOD, 1.0)
    mottle = periodic_noise(rng, PERIOD, 7.0)
    warp = periodic_noise(rng, PERIOD, 14.0)
    angles = np.pi * np.arange(4) / 4
    return Textures(
        fibres=np.stack([oriented_noise(rng, PERIOD, a, 26.0, 28.0) for a in angles]),
        fibrils=np.stack([oriented_noise(rng, PERIOD, a, 10.0, 40.0) for a in angles]),
        speckle=speckle,
        mottle=mottle,
        warp=warp,
        cleft=smoothstep(0.7 * warp + 0.5 * mottle, 0.2, 1.1),
        dust=smoothstep(speckle, 1.3, 2.2),
        cells=CellTextures(
            chromatin=np.clip(periodic_noise(rng, 256, 0.9) / 1.5, -1, 1),
            granules=np.clip(periodic_noise(rng, 128, 0.6) / 1.5, -1, 1),
            vacuoles=smoothstep(vac, 0.2, 0.9),
        ),
    )


def concentrations_to_rgb(h: F32, e: F32, r: F32, stain: Stain, noise: F32) -> NDArray[np.uint8]:
    """RGB uint8 (..., 3) from dye concentrations (Beer-Lambert)."""
    out = np.empty((*h.shape, 3), np.uint8)
    for c in range(3):
        od = h * stain.h[c] + e * stain.e[c] + r * stain.r[c]
        od += stain.glass[c] + 0.012 * noise
        np.maximum(od, 0.0, out=od)
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= 255.0
        out[..., c] = od.astype(np.uint8)
    return out


def stain_matrix(stain: Stain) -> NDArray[np.float64]:
    """Rows H, E, R: optical density per unit concentration (for deconvolution in tests)."""
    return np.stack([stain.h, stain.e, stain.r]).astype(np.float64)


def _periodic(texture: F32, y0: int, x0: int, h: int, w: int) -> F32:
    if y0 % PERIOD == 0 and x0 % PERIOD == 0 and h <= PERIOD and w <= PERIOD:
        return texture[:h, :w]
    rows = np.arange(y0, y0 + h) % texture.shape[0]
    cols = np.arange(x0, x0 + w) % texture.shape[1]
    return texture[np.ix_(rows, cols)]


class Renderer:
    """Draws blocks of one slide; holds its textures and stacked coarse fields."""

    def __init__(self, model: SlideModel) -> None:
        self.model = model
        self.tex = make_textures(model.seed)
        fields = [model.tissue, model.cos_t, model.sin_t, model.loose]
        self.e_terms = [k for k in range(model.bg_e.shape[0]) if np.any(model.bg_e[k])]
        self.h_terms = [k for k in range(model.bg_h.shape[0]) if np.any(model.bg_h[k])]
        fields += [model.bg_e[k] for k in self.e_terms] + [model.bg_h[k] for k in self.h_terms]
        self.stack = np.stack(fields).astype(np.float32)

    def _fine(self, field: F32, y0: int, x0: int, h: int, w: int, floor: float) -> F32 | None:
        """A fine field at half resolution, repeated to full; None where it is all below."""
        i0, i1 = max(y0 // FINE - 2, 0), (y0 + h) // FINE + 3
        j0, j1 = max(x0 // FINE - 2, 0), (x0 + w) // FINE + 3
        if field[i0:i1, j0:j1].max() <= floor:
            return None
        half = sample_stack(field[None], FINE, y0, x0, h // 2, w // 2, 2.0)[0]
        return np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)

    def block(self, y0: int, x0: int, h: int, w: int) -> NDArray[np.uint8]:
        """RGB of the level-0 block with top-left (x0, y0); h and w multiples of 4."""
        # tiny matrix products: BLAS threads only contend with each other here
        with threadpool_limits(limits=1, user_api="blas"):
            return self.block_unlimited(y0, x0, h, w)

    def block_unlimited(self, y0: int, x0: int, h: int, w: int) -> NDArray[np.uint8]:
        """`block` without limiting BLAS threads (the caller already did)."""
        model, tex = self.model, self.tex
        hq, wq = h // Q, w // Q
        shape4 = (hq, Q, wq, Q)
        coarse = sample_stack(self.stack, COARSE, y0, x0, hq, wq, Q)[:, :, None, :, None]
        speck = _periodic(tex.speckle, y0, x0, h, w).reshape(shape4)
        edge = coarse[0]
        if edge.min() < 8 and edge.max() > -8:  # a tissue edge: read the field at full res
            edge = sample_stack(self.stack[:1], COARSE, y0, x0, h, w, 1.0)[0].reshape(shape4)
        tissue = ramp(edge + 3 * speck, -2.0, 2.0)
        zero = np.zeros(shape4, np.float32)
        if not tissue.any():
            return concentrations_to_rgb(zero, zero, zero, model.stain, speck).reshape(h, w, 3)
        mottle = _periodic(tex.mottle, y0, x0, h, w).reshape(shape4)
        # orientation weights of the four streak textures, from the fibre angle field
        cos2 = coarse[1] * coarse[1] - coarse[2] * coarse[2]
        sin2 = 2 * coarse[1] * coarse[2]
        weights = [np.maximum(cos2, 0), np.maximum(sin2, 0), np.maximum(-cos2, 0),
                   np.maximum(-sin2, 0)]  # fmt: skip
        norm = 1.0 / (weights[0] + weights[1] + weights[2] + weights[3] + 1e-6)
        basis: list[F32 | None] = [None, None, mottle, None, None]
        for k, source in ((1, tex.fibres), (3, tex.fibrils)):
            if k in self.e_terms or k in self.h_terms:
                acc = zero.copy()
                for i in range(4):
                    acc += (weights[i] * norm) * _periodic(source[i], y0, x0, h, w).reshape(shape4)
                basis[k] = ramp(acc, -0.4, 1.4)
        if 4 in self.e_terms or 4 in self.h_terms:
            basis[4] = _periodic(tex.dust, y0, x0, h, w).reshape(shape4)
        dyes = []
        at = 4
        for terms in (self.e_terms, self.h_terms):
            total = zero.copy()
            for k in terms:
                term = basis[k]
                total += coarse[at] if term is None else coarse[at] * term
                at += 1
            dyes.append(total)
        e, hx = dyes
        cleft = _periodic(tex.cleft, y0, x0, h, w).reshape(shape4) * coarse[3]
        if basis[1] is not None:
            cleft = np.maximum(cleft, ramp(-basis[1], -0.05, 0.0) * coarse[3] * 0.7)
        e *= 1 - 0.85 * cleft
        hx *= 1 - 0.6 * cleft
        lumen = self._fine(model.lumen, y0, x0, h, w, -4.0)
        if lumen is not None:
            lum = ramp(lumen.reshape(shape4) + speck, -1.5, 1.5)
            e = e * (1 - lum) + lum * 0.03
            hx *= 1 - lum
        vessel = self._fine(model.vessel, y0, x0, h, w, -4.0)
        if vessel is not None:
            ves = ramp(vessel.reshape(shape4) + speck, -1.5, 1.5)
            e = e * (1 - ves) + ves * 0.14 * (1 + 0.2 * mottle)
            hx *= 1 - ves
        band = self._fine(model.band, y0, x0, h, w, 0.0)
        if band is not None:
            bnd = np.clip(band.reshape(shape4), 0, 1)
            if lumen is not None:
                bnd *= 1 - lum
            # goblet-cell mucin: pale blue-grey, unlike the pink stroma around glands
            e = e * (1 - bnd) + bnd * (0.08 + 0.03 * mottle)
            hx = hx * (1 - bnd) + bnd * (0.16 + 0.04 * mottle)
        layers = render_cells(model.cells, model.reach, y0, x0, h, w, tex.cells)
        cyto = layers.cyto_alpha.reshape(shape4)
        e = e * (1 - cyto) + layers.cyto_e.reshape(shape4)
        hx = hx * (1 - cyto) + layers.cyto_h.reshape(shape4) + layers.nucleus_h.reshape(shape4)
        e *= 1 - 0.6 * layers.nucleus_alpha.reshape(shape4)
        red = layers.cyto_r.reshape(shape4)
        rgb = concentrations_to_rgb(hx * tissue, e * tissue, red * tissue, model.stain, speck)
        return rgb.reshape(h, w, 3)

    def rows(self, y0: int, h: int, *, chunk: int = PERIOD) -> NDArray[np.uint8]:
        """A full-width strip of rows, rendered in 512 px blocks."""
        width = self.model.width
        h4 = -(-h // Q) * Q
        out = np.empty((h4, width, 3), np.uint8)
        with threadpool_limits(limits=1, user_api="blas"):
            for x0 in range(0, width, chunk):
                w = min(chunk, width - x0)
                w4 = -(-w // Q) * Q
                out[:, x0 : x0 + w] = self.block_unlimited(y0, x0, h4, w4)[:, :w]
        return out[:h]

    def region(self, x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
        """Any level-0 region (renders the aligned blocks that cover it)."""
        ya, xa = y // PERIOD * PERIOD, x // PERIOD * PERIOD
        yb, xb = -(-(y + h) // PERIOD) * PERIOD, -(-(x + w) // PERIOD) * PERIOD
        out = np.empty((yb - ya, xb - xa, 3), np.uint8)
        with threadpool_limits(limits=1, user_api="blas"):
            for by in range(ya, yb, PERIOD):
                for bx in range(xa, xb, PERIOD):
                    out[by - ya : by - ya + PERIOD, bx - xa : bx - xa + PERIOD] = (
                        self.block_unlimited(by, bx, PERIOD, PERIOD)
                    )
        return out[y - ya : y - ya + h, x - xa : x - xa + w]
