"""The built-in encoder: weight-free stain, colour, texture and nuclear features.

It is the offline default, so the pipeline runs anywhere without model weights. Every
number is computed on the tile resized to 224 px (0.5 um/px for a 112 um tile), in the
data-loader workers, so it scales with CPU cores. Groups, in order (`FEATURE_NAMES`):

- colour: RGB and optical-density means and spreads, saturation, background (glass);
- stain: haematoxylin / eosin / DAB channels of the Ruifrok colour deconvolution
  (scikit-image ``rgb2hed``), their means and percentiles;
- texture: grey-level co-occurrence (contrast, homogeneity, energy, correlation at 1, 2 and
  4 px), uniform local binary patterns, and band energies of the power spectrum;
- nuclei: haematoxylin-rich objects (threshold + opening + connected components) and per
  object area, darkness, elongation, the eosin of the ring around it and its distance to
  the nearest small object (lobed nuclei); summarised by density, means, the extremes
  (a rare cell changes the extremes of a tile more than its means) and counts of objects
  that look unusual (small and dark, large and pale, elongated, eosin-ringed, lobed).

Bump ``VERSION`` whenever a number changes: resuming refuses features of another version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from skimage.feature import graycomatrix, graycoprops

from histocurate.features.base import Encoder, Preprocessor, resize_tile

VERSION = 1
INPUT_PX = 224
UM_PER_PX = 112.0 / INPUT_PX  # a 112 um tile at 224 px
PX_AREA_UM2 = UM_PER_PX**2

H_THRESHOLD = 0.055  # haematoxylin (rgb2hed units) above which a pixel is nuclear
MIN_AREA_UM2 = 3.0  # smaller objects are noise
SMALL_UM2, LARGE_UM2 = 15.0, 55.0
ELONGATED = 2.5  # major / minor axis ratio
LOBE_GAP_UM = 3.0  # two small objects closer than this are lobes of one nucleus

_GLCM_DISTANCES = (1, 2, 4)
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
_LBP_BINS = 10  # uniform LBP with 8 neighbours: values 0..9
_FFT_BANDS = ((1, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 112))  # cycles per tile


def _names() -> tuple[str, ...]:
    names = ["rgb_mean_r", "rgb_mean_g", "rgb_mean_b", "rgb_std_r", "rgb_std_g", "rgb_std_b"]
    names += ["od_mean_r", "od_mean_g", "od_mean_b", "sat_mean", "sat_std", "background"]
    for stain in ("h", "e"):
        names += [f"{stain}_{s}" for s in ("mean", "std", "p10", "p50", "p90", "p99")]
    names += ["d_mean", "d_std", "he_ratio", "e_high_fraction", "pale_fraction"]
    names += [f"glcm_{p}_d{d}" for d in _GLCM_DISTANCES for p in _GLCM_PROPS]
    names += [f"lbp_{i}" for i in range(_LBP_BINS)]
    names += [f"fft_{lo}_{hi}" for lo, hi in _FFT_BANDS]
    names += [
        "nuc_count_log", "nuc_fraction",
        "nuc_area_mean", "nuc_area_std", "nuc_area_p10", "nuc_area_p90", "nuc_area_max",
        "nuc_dark_mean", "nuc_dark_std", "nuc_dark_max", "nuc_dark_top3",
        "nuc_elong_mean", "nuc_elong_p90", "nuc_elong_max",
        "nuc_ring_e_mean", "nuc_ring_e_max", "nuc_ring_e_top3",
        "nuc_small_dark", "nuc_large_pale", "nuc_elongated", "nuc_eos_ring", "nuc_lobed",
        "nuc_tiny", "nuc_darkest_small_area", "nuc_nn_mean", "nuc_nn_min",
    ]  # fmt: skip
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
DIM = len(FEATURE_NAMES)


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    if values.size == 0:
        return [0.0] * len(qs)
    return [float(v) for v in np.percentile(values, qs)]


def _top(values: np.ndarray, k: int) -> float:
    if values.size == 0:
        return 0.0
    return float(np.sort(values)[-k:].mean())


def _colour_stain(rgb: np.ndarray, hed: np.ndarray) -> list[float]:
    # Every other pixel in each direction: the statistics do not move, the time is 4x less.
    pixels = rgb[::2, ::2].reshape(-1, 3).astype(np.float32) / 255.0
    od = -np.log(np.clip(pixels, 1 / 255, 1.0))
    mx, mn = pixels.max(axis=1), pixels.min(axis=1)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    od_sum = od.sum(axis=1)
    tissue = od_sum >= 0.15
    out = [*pixels.mean(axis=0), *pixels.std(axis=0), *od.mean(axis=0)]
    out += [float(sat.mean()), float(sat.std()), float(1.0 - tissue.mean())]
    h, e, d = (hed[::2, ::2, i].ravel() for i in range(3))
    for channel in (h, e):
        out += [float(channel.mean()), float(channel.std())]
        out += _percentiles(channel, (10, 50, 90, 99))
    e_high = float((e[tissue] > 0.06).mean()) if tissue.any() else 0.0
    pale = float(((h < 0.02) & (e < 0.02) & tissue).mean())
    out += [float(d.mean()), float(d.std()), float(h.mean() / (e.mean() + 1e-3)), e_high, pale]
    return [float(v) for v in out]


def _uniform_lbp_table() -> np.ndarray:
    """Uniform LBP code (0..9) of each 8-bit neighbour pattern (rotation invariant)."""
    table = np.empty(256, np.int64)
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
        table[code] = sum(bits) if transitions <= 2 else 9
    return table


_LBP_TABLE = _uniform_lbp_table()
_OFFSETS = np.arange(INPUT_PX) - INPUT_PX // 2
_RADIUS = np.hypot(*np.meshgrid(_OFFSETS, _OFFSETS))
_BAND_MASKS = tuple((lo <= _RADIUS) & (hi > _RADIUS) for lo, hi in _FFT_BANDS)


def _lbp_histogram(grey: np.ndarray) -> np.ndarray:
    """Histogram of uniform local binary patterns (8 neighbours at 1 px), normalised."""
    g = grey.astype(np.int16)
    centre = g[1:-1, 1:-1]
    offsets = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
    code = np.zeros(centre.shape, np.int64)
    rows, cols = g.shape
    for bit, (dy, dx) in enumerate(offsets):
        neighbour = g[1 + dy : rows - 1 + dy, 1 + dx : cols - 1 + dx]
        code |= (neighbour >= centre).astype(np.int64) << bit
    hist = np.bincount(_LBP_TABLE[code].ravel(), minlength=_LBP_BINS).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def _texture(grey: np.ndarray) -> list[float]:
    levels = (grey.astype(np.uint16) * 16 // 256).astype(np.uint8)
    glcm = graycomatrix(
        levels, _GLCM_DISTANCES, _GLCM_ANGLES, levels=16, symmetric=True, normed=True
    )
    out: list[float] = []
    for di in range(len(_GLCM_DISTANCES)):
        for prop in _GLCM_PROPS:
            with np.errstate(invalid="ignore", divide="ignore"):
                values = graycoprops(glcm[:, :, di : di + 1], prop)
            out.append(float(np.nan_to_num(values.mean(), nan=1.0)))  # flat tile: correlation 1
    out += [float(v) for v in _lbp_histogram(grey)]
    centred = grey.astype(np.float32) - grey.mean()
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(centred))) ** 2
    total = float(spectrum.sum()) + 1e-6
    out += [float(spectrum[band].sum() / total) for band in _BAND_MASKS]
    return out


def _label_means(values: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per label 1..n (0 where a label has no pixel)."""
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=counts.size)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)[1:]


_YY, _XX = np.indices((INPUT_PX, INPUT_PX), dtype=np.float64)


def _nuclei(hed: np.ndarray) -> list[float]:
    h, e = hed[..., 0], hed[..., 1]
    mask = ndimage.binary_opening(h > H_THRESHOLD, structure=np.ones((2, 2), bool))
    labels, n = ndimage.label(mask)
    empty = [0.0] * 24 + [60.0, 60.0]
    if n == 0:
        return empty
    counts = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    area = counts[1:] * PX_AREA_UM2
    keep = area >= MIN_AREA_UM2
    if not keep.any():
        return empty
    yy, xx = _YY[: h.shape[0], : h.shape[1]], _XX[: h.shape[0], : h.shape[1]]
    dark = _label_means(h, labels, counts)
    cy, cx = _label_means(yy, labels, counts), _label_means(xx, labels, counts)
    vyy = _label_means(yy * yy, labels, counts) - cy**2
    vxx = _label_means(xx * xx, labels, counts) - cx**2
    vxy = _label_means(xx * yy, labels, counts) - cx * cy
    half_trace, det = (vxx + vyy) / 2, vxx * vyy - vxy**2
    root = np.sqrt(np.maximum(half_trace**2 - det, 0))
    major, minor = half_trace + root, np.maximum(half_trace - root, 1e-3)
    elong = np.sqrt(np.maximum(major, 1e-3) / minor).clip(1, 20)
    grown = ndimage.grey_dilation(labels, size=(7, 7))
    ring_labels = np.where(labels == 0, grown, 0)
    ring_counts = np.bincount(ring_labels.ravel(), minlength=n + 1).astype(np.float64)
    ring_e = _label_means(e, ring_labels, ring_counts)
    area, dark, elong, ring_e = area[keep], dark[keep], elong[keep], ring_e[keep]
    centres = np.stack([cy[keep], cx[keep]], axis=1) * UM_PER_PX
    count = int(keep.sum())
    if count > 1:
        dist, _ = cKDTree(centres).query(centres, k=2)
        nearest = dist[:, 1]
    else:
        nearest = np.full(count, 60.0)
    small = area < SMALL_UM2
    dark_hi = float(np.percentile(h, 99))
    darkest_small = float(area[small][np.argmax(dark[small])]) if small.any() else 0.0
    return [
        float(np.log1p(count)),
        float(mask.mean()),
        float(area.mean()),
        float(area.std()),
        *_percentiles(area, (10, 90)),
        float(area.max()),
        float(dark.mean()),
        float(dark.std()),
        float(dark.max()),
        _top(dark, 3),
        float(elong.mean()),
        *_percentiles(elong, (90,)),
        float(elong.max()),
        float(ring_e.mean()),
        float(ring_e.max()),
        _top(ring_e, 3),
        float(np.log1p((small & (dark > max(dark_hi, 0.09))).sum())),
        float(np.log1p(((area > LARGE_UM2) & (dark < np.median(dark))).sum())),
        float(np.log1p((elong > ELONGATED).sum())),
        float(np.log1p((ring_e > 0.05).sum())),
        float(np.log1p((small & (nearest < LOBE_GAP_UM + 4)).sum())),
        float(np.log1p((area < 8.0).sum())),
        darkest_small,
        float(nearest.mean()),
        float(nearest.min()),
    ]


def builtin_features(tile: np.ndarray) -> np.ndarray:
    """The built-in feature vector (``DIM`` float32 values) of one RGB ``uint8`` tile."""
    rgb = resize_tile(tile, INPUT_PX)
    hed = rgb2hed(rgb)
    grey = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    values = _colour_stain(rgb, hed) + _texture(grey) + _nuclei(hed)
    out = np.asarray(values, dtype=np.float32)
    assert out.shape == (DIM,), (out.shape, DIM)
    return out


@dataclass(frozen=True, slots=True)
class BuiltinPreprocessor:
    """Runs in loader workers: the whole computation happens here."""

    def __call__(self, tile: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(builtin_features(tile))


class BuiltinEncoder(Encoder):
    """Weight-free features; ``encode`` only converts (the work is in the preprocessor)."""

    def __init__(self) -> None:
        self.name = "builtin"
        self.dim = DIM
        self.input_px = INPUT_PX

    def preprocessor(self) -> Preprocessor:
        return BuiltinPreprocessor()

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        return batch.detach().cpu().numpy().astype(np.float32, copy=False)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "input_px": self.input_px, "version": VERSION}


def build_builtin() -> BuiltinEncoder:
    """The weight-free encoder (the registry's builder)."""
    return BuiltinEncoder()
