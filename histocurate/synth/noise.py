"""Smooth random fields and their cheap resampling to full resolution.

The slide layout lives on coarse grids (one value per 8 or 32 level-0 pixels). A block of
pixels reads them with bilinear interpolation written as two small matrix products
(``Wy @ field @ Wx.T``), which costs far less than per-pixel interpolation and gives the
same value for a pixel whichever block it is rendered in (so blocks join seamlessly).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

F32 = NDArray[np.float32]


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, float]
) -> F32:
    """Gaussian-filtered white noise, zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def periodic_noise(rng: np.random.Generator, size: int, sigma: float) -> F32:
    """Like `smooth_noise` but periodic (wraps around), for tiling fine textures."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def oriented_noise(
    rng: np.random.Generator, size: int, angle: float, wavelength: float, length: float
) -> F32:
    """Periodic streaks along ``angle`` (radians): collagen fibres, muscle fibrils.

    Band-pass white noise in Fourier space: across the streaks around 1/``wavelength``,
    along them below 1/``length`` (px), so streaks are long, wavy and of varying strength.
    """
    freq = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(freq, freq, indexing="ij")
    along = fx * np.cos(angle) + fy * np.sin(angle)
    across = -fx * np.sin(angle) + fy * np.cos(angle)
    sigma_along = 1.0 / (2 * np.pi * length)
    band = 0.6 / wavelength
    gain = np.exp(-0.5 * (along / sigma_along) ** 2)
    gain *= np.exp(-0.5 * ((np.abs(across) - 1.0 / wavelength) / band) ** 2)
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * gain
    field = np.real(np.fft.ifft2(spectrum))
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def _weights(n_out: int, start: float, step: float, n_in: int) -> tuple[F32, int, int]:
    """Bilinear weights from ``n_in`` grid values to ``n_out`` samples at start + i*step."""
    pos = np.clip(start + step * np.arange(n_out, dtype=np.float64), 0.0, n_in - 1.0)
    if n_in == 1:
        return np.ones((n_out, 1), np.float32), 0, 1
    idx = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    frac = (pos - idx).astype(np.float32)
    first = int(idx.min())
    count = int(idx.max()) - first + 2
    weights = np.zeros((n_out, count), np.float32)
    rows = np.arange(n_out)
    weights[rows, idx - first] = 1.0 - frac
    weights[rows, idx - first + 1] += frac
    return weights, first, count


def sample_block(field: F32, cell: float, y0: int, x0: int, h: int, w: int) -> F32:
    """``field`` (value j at level-0 coordinate (j + 0.5) * cell) at the pixel centres of a
    block, bilinearly interpolated; ``cell`` may be below 1 (a coarse level reads it)."""
    wy, fy, ny = _weights(h, (y0 + 0.5) / cell - 0.5, 1.0 / cell, field.shape[0])
    wx, fx, nx = _weights(w, (x0 + 0.5) / cell - 0.5, 1.0 / cell, field.shape[1])
    sub = field[fy : fy + ny, fx : fx + nx]
    return np.asarray(wy @ sub @ wx.T, dtype=np.float32)


def sample_scaled(
    field: F32, cell: float, y0: float, x0: float, h: int, w: int, step: float
) -> F32:
    """Like `sample_block` for a block whose pixels are ``step`` level-0 pixels wide."""
    wy, fy, ny = _weights(h, (y0 + 0.5 * step) / cell - 0.5, step / cell, field.shape[0])
    wx, fx, nx = _weights(w, (x0 + 0.5 * step) / cell - 0.5, step / cell, field.shape[1])
    sub = field[fy : fy + ny, fx : fx + nx]
    return np.asarray(wy @ sub @ wx.T, dtype=np.float32)


def sample_stack(stack: F32, cell: float, y0: float, x0: float, h: int, w: int, step: float) -> F32:
    """`sample_scaled` for a stack of fields (F, rows, cols) at once: (F, h, w)."""
    wy, fy, ny = _weights(h, (y0 + 0.5 * step) / cell - 0.5, step / cell, stack.shape[1])
    wx, fx, nx = _weights(w, (x0 + 0.5 * step) / cell - 0.5, step / cell, stack.shape[2])
    sub = np.ascontiguousarray(stack[:, fy : fy + ny, fx : fx + nx])
    return np.asarray(np.matmul(np.matmul(wy, sub), np.ascontiguousarray(wx.T)), np.float32)


def sample_points(field: F32, cell: float, x: NDArray[np.float64], y: NDArray[np.float64]) -> F32:
    """``field`` at level-0 points (bilinear), e.g. to know which zone a cell sits in."""
    coords = np.stack([y / cell - 0.5, x / cell - 0.5])
    return ndimage.map_coordinates(field, coords, order=1, mode="nearest").astype(np.float32)


def smoothstep(x: NDArray[np.floating], lo: float, hi: float) -> NDArray[np.float32]:
    """0 below ``lo``, 1 above ``hi``, smooth in between."""
    t = np.asarray(x, dtype=np.float32) - np.float32(lo)
    t *= np.float32(1.0 / (hi - lo))
    np.clip(t, 0.0, 1.0, out=t)
    t2 = t * t
    t *= -2.0
    t += 3.0
    t *= t2
    return t


def ramp(x: NDArray[np.floating], lo: float, hi: float) -> NDArray[np.float32]:
    """0 below ``lo``, 1 above ``hi``, linear in between (cheaper than `smoothstep`)."""
    t = np.asarray(x, dtype=np.float32) - np.float32(lo)
    t *= np.float32(1.0 / (hi - lo))
    return np.clip(t, 0.0, 1.0, out=t)
