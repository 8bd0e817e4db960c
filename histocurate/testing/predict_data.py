"""Test oracles for inference: what windows would report of known nuclei, a model that
finds dark blobs exactly, and a tiny random checkpoint.

Each window sees the nuclei its read box meets, each cut by the box where it crosses it
(flagged as touching that edge; pieces under ``min_area`` px dropped, as the
post-processing drops blobs under 10 px), and slightly moved (a different segmentation in each
window: ``jitter`` px per nucleus and window). The tests and `benchmarks/stitch.py` stitch
these and check that every true nucleus comes out once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import shapely
import torch

from histocurate.predict.windows import WindowGrid
from histocurate.predict.worker import WindowCells


def disc_cells(xy: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Round nuclei (16-vertex polygons) at level-0 centres ``xy`` (n, 2)."""
    return np.asarray(shapely.buffer(shapely.points(xy), radii, quad_segs=4), dtype=object)


def full_tiles(slide_id: str, width: int, height: int, size: int) -> pd.DataFrame:
    """Tiles covering a ``width`` x ``height`` region (every tile on tissue)."""
    xs, ys = np.meshgrid(np.arange(0, width, size), np.arange(0, height, size))
    x, y = xs.ravel(), ys.ravel()
    return pd.DataFrame(
        {
            "tile_id": [f"{slide_id}_x{a}_y{b}" for a, b in zip(x, y, strict=True)],
            "x": x,
            "y": y,
            "size_level0": size,
            "tissue_fraction": 1.0,
        }
    )


def window_views(
    grid: WindowGrid,
    cells: np.ndarray,
    *,
    types: np.ndarray | None = None,
    jitter: float = 0.3,
    seed: int = 0,
    n_classes: int = 3,
    min_area: float = 10.0,
) -> list[WindowCells]:
    """What every window of ``grid`` reports of the true outlines ``cells``."""
    rng = np.random.default_rng(seed)
    n = len(cells)
    types = np.ones(n, np.int32) if types is None else np.asarray(types, np.int32)
    tree = shapely.STRtree(cells)
    views = []
    for w in grid.windows:
        box = shapely.box(w.x0, w.y0, w.x0 + w.side0, w.y0 + w.side0)
        idx = np.sort(tree.query(box, predicate="intersects"))
        geoms = cells[idx]
        if jitter and idx.size:
            coords, which = shapely.get_coordinates(geoms, return_index=True)
            shift = rng.uniform(-jitter, jitter, (idx.size, 2))
            geoms = shapely.set_coordinates(
                shapely.from_wkb(shapely.to_wkb(geoms)), coords + shift[which]
            )
        bounds = shapely.bounds(geoms)
        edge = (w.x0, w.y0, w.x0 + w.side0, w.y0 + w.side0)
        touch = np.stack(
            [
                bounds[:, 0] <= edge[0],
                bounds[:, 1] <= edge[1],
                bounds[:, 2] >= edge[2],
                bounds[:, 3] >= edge[3],
            ],
            axis=1,
        )
        geoms = shapely.intersection(geoms, box)
        ok = shapely.area(geoms) >= min_area  # post-processing drops smaller blobs
        geoms, idx, touch = geoms[ok], idx[ok], touch[ok]
        centre = shapely.centroid(geoms)
        probs = np.zeros((idx.size, n_classes), np.float32)
        probs[np.arange(idx.size), types[idx]] = 1.0
        views.append(
            WindowCells(
                key=w.index,
                x=shapely.get_x(centre),
                y=shapely.get_y(centre),
                bbox=shapely.bounds(geoms),
                touch=touch,
                area=shapely.area(geoms),
                type_index=types[idx],
                confidence=np.ones(idx.size, np.float32),
                probs=probs,
                wkb=np.asarray(shapely.to_wkb(geoms), dtype=object),
            )
        )
    return views


class OracleModel(torch.nn.Module):
    """A stand-in for a trained CellViT in tests: every dark blob of the input is a nucleus
    (type 1), with exact HV maps; an input holding pure blue pixels gives NaN outputs."""

    def __init__(self, n_types: int = 3, patch: int = 14) -> None:
        super().__init__()
        self.n_types = n_types
        self.backbone = SimpleNamespace(patch_size=patch)
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from scipy import ndimage as ndi

        from histocurate.cellvit.targets import hv_maps

        arr = x.detach().float().cpu().numpy()
        nps, hvs, tps = [], [], []
        for image in arr:
            dark = image.mean(axis=0) < 0.45
            inst, _ = ndi.label(dark)
            fg = np.where(dark, 8.0, -8.0).astype(np.float32)
            tp = np.full((self.n_types + 1, *dark.shape), -8.0, np.float32)
            tp[0] = -fg
            tp[1] = fg
            blue = (image[2] > 0.95) & (image[0] < 0.05) & (image[1] < 0.05)
            nan = np.float32(np.nan) if blue.any() else np.float32(0.0)
            nps.append(np.stack([-fg, fg]) + nan)
            hvs.append(hv_maps(inst.astype(np.int32)))
            tps.append(tp)
        return {
            k: torch.from_numpy(np.stack(v)) for k, v in (("np", nps), ("hv", hvs), ("tp", tps))
        }


def tiny_checkpoint(
    path: Path,
    *,
    classes: Sequence[str] = ("cancer_cell", "lymphocyte", "eosinophil"),
    mpp: float | None = 0.25,
    foreground: float = 1.0,
    seed: int = 0,
    train_config: dict[str, Any] | None = None,
) -> Path:
    """A tiny random CellViT saved in the real checkpoint layout; its NP head is biased to
    nucleus (``foreground``) so that post-processing finds cells in the random HV maps."""
    from histocurate.cellvit.checkpoint import save_checkpoint
    from histocurate.cellvit.model import CellViTConfig, build_model

    torch.manual_seed(seed)
    arch = {"embed_dim": 32, "depth": 4, "num_heads": 2}
    config = CellViTConfig(n_types=len(classes), tile_size=112, arch=arch, decoder_divisor=64)
    model = build_model(config)
    head = model.np_branch.decoder0_header[2]
    assert isinstance(head, torch.nn.Conv2d) and head.bias is not None
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, foreground]))
    return save_checkpoint(path, model, classes=list(classes), mpp=mpp,
                           train_config=train_config)  # fmt: skip


def oracle_loader(
    *,
    classes: Sequence[str] = ("cancer_cell", "lymphocyte", "eosinophil"),
    tile_size: int = 224,
    digest: str = "oracle",
) -> Callable[..., Any]:
    """A stand-in for `histocurate.predict.models.load_model` that gives the `OracleModel`
    for any checkpoint path (tests patch it into the modules that load models)."""
    from histocurate.cellvit.checkpoint import CheckpointInfo
    from histocurate.cellvit.model import CellViTConfig
    from histocurate.predict.models import LoadedModel

    info = CheckpointInfo(classes=tuple(classes), colours=("#ff0000",) * len(classes),
                          mpp=0.25, tile_size=tile_size, mean=(0, 0, 0), std=(1, 1, 1),
                          encoder="oracle", config=CellViTConfig())  # fmt: skip

    def load(path: Path, device: str = "auto") -> LoadedModel:
        model: Any = OracleModel()
        return LoadedModel(model, info, torch.device("cpu"), path, digest)

    return load
