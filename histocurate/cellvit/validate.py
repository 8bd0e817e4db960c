"""Validation: the model on held-out tiles, HoVer post-processing, the caller's metrics.

The model package does not know the project's metrics: the caller passes a
`ValidationMetrics` (`histocurate.training.metrics.ProjectMetrics` is the pipeline's:
bPQ, DQ, SQ, per-class F1 with 12 px centroid pairing at 40x). Each tile is predicted
(padded to a multiple of the patch, cropped back), post-processed by
`histocurate.cellvit.postprocess.instances_from_maps` and scored by ``score_tile``; the
small per-tile records are gathered from all ranks (each validates every ``world``-th
tile) and ``summarise`` makes the numbers, the same on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from histocurate.cellvit.distributed import DistContext, gather_objects
from histocurate.cellvit.loader import ClassMap
from histocurate.cellvit.model import CellViT
from histocurate.cellvit.postprocess import HoverOptions, PostprocessPool
from histocurate.torchutil import autocast, eval_mode


@dataclass(frozen=True)
class ValTile:
    """One validation tile: truth in model channels, prediction and its cells table."""

    tile_id: str
    mpp: float
    true_inst: np.ndarray  # int32 (H, W)
    true_types: np.ndarray  # uint8 (H, W): model channels, 255 undetermined
    true_sets: np.ndarray | None  # int32 (H, W) label-set bits in model channels
    pred_inst: np.ndarray  # int32 (H, W)
    cells: pd.DataFrame  # x, y, type (model channel, 0 none), confidence, ...


class ValidationMetrics(Protocol):
    """The caller's metrics: a small picklable record per tile, then the numbers."""

    def score_tile(self, tile: ValTile) -> Any: ...

    def summarise(self, records: Sequence[Any]) -> dict[str, float]: ...


def pad_to(images: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) at the bottom and right to a multiple of ``multiple``."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        images = F.pad(images, (0, pw, 0, ph), mode=mode)
    return images, (h, w)


def predict_maps(
    model: CellViT, images: torch.Tensor, *, precision: str, channels_last: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB (B, 3, H, W) -> NP foreground probability (B, H, W), HV (B, 2, H, W) and
    NT probabilities (B, C, H, W), float32 numpy, at the input size."""
    device = next(model.parameters()).device
    x = model.normalise(images.to(device))
    x, (h, w) = pad_to(x, model.backbone.patch_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with eval_mode(model), autocast(device, precision):
        out = model(x)
    np_prob = out["np"].float().softmax(1)[:, 1, :h, :w]
    hv = out["hv"].float()[:, :, :h, :w]
    tp_prob = out["tp"].float().softmax(1)[:, :, :h, :w]
    return np_prob.cpu().numpy(), hv.cpu().numpy(), tp_prob.cpu().numpy()


def _groups(
    tiles: Dataset[dict[str, Any]], indices: Sequence[int], batch: int
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """(index, item) of consecutive tiles of one shape, at most ``batch`` at a time (read
    as they go: a validation set is never held in memory whole)."""
    group: list[tuple[int, dict[str, Any]]] = []
    for index in indices:
        item = tiles[index]
        if group and (len(group) == batch or item["image"].shape != group[-1][1]["image"].shape):
            yield group
            group = []
        group.append((index, item))
    if group:
        yield group


def validate(
    model: CellViT,
    tiles: Dataset[dict[str, Any]],
    metrics: ValidationMetrics,
    classes: ClassMap,
    *,
    ctx: DistContext,
    precision: str = "fp32",
    batch: int = 8,
    workers: int = 0,
    channels_last: bool = False,
) -> dict[str, float]:
    """Score ``model`` on ``tiles`` (items as `histocurate.dataset.NucleiDataset`'s; the
    label sets of undetermined nuclei count where the items carry a ``set_map``, whatever
    the training did with them, so that runs with and without them compare)."""
    n = len(tiles)  # type: ignore[arg-type]
    mine = list(range(ctx.rank, n, ctx.world_size))
    records: list[tuple[int, Any]] = []
    mpp = float(tiles[mine[0]]["mpp"]) if mine else 0.25
    options = HoverOptions.for_mpp(mpp, polygons=False)  # scores need maps, not outlines
    with PostprocessPool(workers, mpp=mpp, options=options) as pool:
        for group in _groups(tiles, mine, batch):
            images = torch.stack(
                [torch.from_numpy(np.ascontiguousarray(item["image"])) for _, item in group]
            ).permute(0, 3, 1, 2)
            np_prob, hv, tp_prob = predict_maps(
                model, images, precision=precision, channels_last=channels_last
            )
            futures = [pool.submit(np_prob[k], hv[k], tp_prob[k]) for k in range(len(group))]
            for (index, item), future in zip(group, futures, strict=True):
                pred_inst, cells = future.result()
                sets = item.get("set_map")
                tile = ValTile(
                    tile_id=str(item["tile_id"]),
                    mpp=float(item["mpp"]),
                    true_inst=np.asarray(item["inst_map"], dtype=np.int32),
                    true_types=classes.types(item["type_map"]),
                    true_sets=None if sets is None else classes.bits(sets),
                    pred_inst=pred_inst,
                    cells=cells,
                )
                records.append((index, metrics.score_tile(tile)))
    gathered = [r for part in gather_objects(ctx, records) for r in part]
    gathered.sort(key=lambda r: r[0])
    return metrics.summarise([r for _, r in gathered])
