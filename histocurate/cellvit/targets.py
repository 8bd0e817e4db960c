"""Training targets from an instance map and a type map: NP, HV and NT (plus label sets).

Maps (H, W): ``inst_map`` (0 background, one id per nucleus), ``type_map`` (the type of
each nucleus pixel: 1..n_types, or `IGNORE_TYPE` for an undetermined nucleus) and,
optionally, ``set_map`` (for undetermined nuclei whose proposed labels are known: a
bitmask, bit c set when type c is proposed; 0 elsewhere). They are carried through the
augmentation together, and the targets are rebuilt afterwards, as CellViT does.

- NP: 1 on nucleus pixels (undetermined ones included), 0 elsewhere.
- HV: `hv_maps`, HoVer-Net's definition (undetermined nuclei included).
- NT: 0 on background, the type on typed nucleus pixels, `IGNORE_TYPE` on undetermined
  ones (and on nucleus pixels whose type is 0: a nucleus cannot be background).

>>> inst = np.array([[0, 1, 1], [0, 1, 1], [2, 2, 0]])
>>> types = type_map_from_instances(inst, {1: 3, 2: IGNORE_TYPE})
>>> build_targets(inst, types).nt_target.tolist()
[[0, 3, 3], [0, 3, 3], [255, 255, 0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_TYPE = 255  # NT target of undetermined nuclei (excluded from the NT loss)


def _normalise_sides(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Each instance's negative values divided by |their minimum|, positive values by their
    maximum (the two sides separately, as HoVer-Net)."""
    neg = np.zeros(n)
    pos = np.zeros(n)
    np.minimum.at(neg, labels, values)
    np.maximum.at(pos, labels, values)
    scale = np.where(values < 0, -neg[labels], pos[labels])
    return np.divide(values, scale, out=np.zeros_like(values), where=scale != 0)


def hv_maps(inst_map: np.ndarray) -> np.ndarray:
    """HoVer-Net's horizontal / vertical maps: float32 (2, H, W), channel 0 horizontal.

    For each nucleus: x = (col + 1) - round(centre col), y = (row + 1) - round(centre row)
    (HoVer-Net's +1 offset and round-half-up kept, so targets are identical to CellViT's),
    then each side of zero scaled to [-1, 1] on its own. Background is 0.

    >>> hv_maps(np.array([[0, 0, 0, 0], [0, 1, 1, 1]]))[0].tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]]
    """
    inst = np.asarray(inst_map)
    if inst.ndim != 2:
        raise ValueError(f"inst_map must be 2-D, got shape {inst.shape}")
    if inst.size and inst.min() < 0:
        raise ValueError("inst_map has negative ids")
    out = np.zeros((2, *inst.shape), dtype=np.float32)
    idx = np.flatnonzero(inst)
    if not len(idx):
        return out
    labels = inst.ravel()[idx].astype(np.int64)
    if labels.max() > 4 * inst.size:  # sparse huge ids: compact them first
        labels = np.unique(labels, return_inverse=True)[1] + 1
    n = int(labels.max()) + 1
    rows, cols = np.divmod(idx, inst.shape[1])
    count = np.maximum(np.bincount(labels, minlength=n), 1)
    row_c = np.bincount(labels, weights=rows, minlength=n) / count
    col_c = np.bincount(labels, weights=cols, minlength=n) / count
    x = (cols + 1) - np.floor(col_c + 0.5)[labels]
    y = (rows + 1) - np.floor(row_c + 0.5)[labels]
    out[0].ravel()[idx] = _normalise_sides(x, labels, n)
    out[1].ravel()[idx] = _normalise_sides(y, labels, n)
    return out


def type_map_from_instances(
    inst_map: np.ndarray, inst_types: Mapping[int, int] | Sequence[int] | np.ndarray
) -> np.ndarray:
    """A type map (H, W) uint8 from each instance's type (a mapping id -> type, or an array
    indexed by id). Ids without a type get `IGNORE_TYPE`."""
    inst = np.asarray(inst_map, dtype=np.int64)
    size = int(inst.max()) + 1 if inst.size else 1
    lut = np.full(size, IGNORE_TYPE, dtype=np.int64)
    lut[0] = 0
    items = inst_types.items() if isinstance(inst_types, Mapping) else enumerate(inst_types)
    for inst_id, value in items:
        if 0 < int(inst_id) < size:
            lut[int(inst_id)] = int(value)
    if lut.max() > 255:
        raise ValueError("types must fit in uint8 (1..254, 255 = ignore)")
    return lut[inst].astype(np.uint8)


def label_set_bits(labels: Sequence[int]) -> int:
    """The bitmask of a label set (types 1..30).

    >>> label_set_bits([1, 3])
    10
    """
    bits = 0
    for label in labels:
        if not 0 < int(label) < 31:
            raise ValueError(f"label {label}: label sets hold types 1..30")
        bits |= 1 << int(label)
    return bits


@dataclass(frozen=True, slots=True)
class Targets:
    """One tile's targets: ``np_target`` uint8 (H, W), ``hv_target`` float32 (2, H, W),
    ``nt_target`` uint8 (H, W) with `IGNORE_TYPE`, ``sets`` int32 (H, W) label-set bitmasks
    (0: none). The names are `CellViTLoss`' keywords: batch them and pass them on."""

    np_target: np.ndarray
    hv_target: np.ndarray
    nt_target: np.ndarray
    sets: np.ndarray


def build_targets(
    inst_map: np.ndarray, type_map: np.ndarray, set_map: np.ndarray | None = None
) -> Targets:
    """NP, HV and NT targets (see the module docstring) from the maps of one tile."""
    inst = np.asarray(inst_map)
    types = np.asarray(type_map)
    if inst.shape != types.shape:
        raise ValueError(f"inst_map {inst.shape} and type_map {types.shape} differ in shape")
    fg = inst > 0
    nt = np.where(fg, types, 0).astype(np.uint8)
    nt[fg & (types == 0)] = IGNORE_TYPE
    if set_map is None:
        sets = np.zeros(inst.shape, dtype=np.int32)
    else:
        sets = np.where(fg & (nt == IGNORE_TYPE), np.asarray(set_map), 0).astype(np.int32)
    return Targets(np_target=fg.astype(np.uint8), hv_target=hv_maps(inst), nt_target=nt, sets=sets)
