"""What every encoder is: a name, an output dimension, an input size and a normalisation.

An encoder splits its work in two so that the expensive part runs where it should:

- ``preprocessor()`` returns a small picklable callable (no model inside) that turns one
  RGB ``uint8`` tile into a tensor. It runs in the data-loader worker processes, next to
  the tile reader, so resizing (and, for the built-in encoder, all of the work) is spread
  over CPU cores.
- ``encode(batch)`` runs in the main process on the stacked batch: for a network it moves
  the ``uint8`` batch to the device (4x less to copy than float), normalises it there and
  runs the forward pass, in mixed precision on a GPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from histocurate.imaging import resize_rgb
from histocurate.torchutil import autocast, resolve_device

Preprocessor = Callable[[np.ndarray], torch.Tensor]

H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
H_OPTIMUS_STD = (0.211883, 0.230117, 0.177517)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB ``uint8`` tile to ``size`` x ``size`` (`histocurate.imaging`)."""
    return resize_rgb(tile, (size, size))


@dataclass(frozen=True, slots=True)
class ResizeToTensor:
    """Tile -> ``uint8`` tensor (3, size, size): the loader-side step of a network encoder."""

    size: int

    def __call__(self, tile: np.ndarray) -> torch.Tensor:
        resized = np.ascontiguousarray(resize_tile(tile, self.size).transpose(2, 0, 1))
        return torch.from_numpy(resized)


class Encoder(ABC):
    """A tile encoder. Subclasses set ``name``, ``dim`` and ``input_px`` in ``__init__``."""

    name: str
    dim: int
    input_px: int

    @abstractmethod
    def preprocessor(self) -> Preprocessor:
        """A picklable callable run in loader workers: RGB uint8 tile -> tensor."""

    @abstractmethod
    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """Stacked preprocessor outputs -> ``(len(batch), dim)`` float32 features."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What made the vectors (recorded beside them; resuming checks it is unchanged)."""

    def embed_tiles(self, tiles: list[np.ndarray]) -> np.ndarray:
        """Features of a few tiles in memory (no loader, no workers): tests and notebooks."""
        if not tiles:
            return np.zeros((0, self.dim), dtype=np.float32)
        prep = self.preprocessor()
        return self.encode(torch.stack([prep(t) for t in tiles]))


class TorchEncoder(Encoder):
    """A network encoder: normalisation on the device, then ``forward_features``."""

    def __init__(
        self,
        *,
        name: str,
        model: torch.nn.Module,
        dim: int,
        input_px: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str = "auto",
        precision: str = "auto",
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.dim = dim
        self.input_px = input_px
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.device = resolve_device(device)
        self.precision = precision
        self.model: Any = model.eval().to(self.device)
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        self._identity = dict(identity or {})

    @abstractmethod
    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixels (B, 3, S, S) -> (B, dim)."""

    def preprocessor(self) -> Preprocessor:
        return ResizeToTensor(self.input_px)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """``uint8`` (B, 3, S, S) -> normalised float32 on this encoder's device."""
        pixels = batch.to(self.device, non_blocking=True).float().div_(255.0)
        return (pixels - self._mean) / self._std

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            pixels = self.normalise(batch)
            with autocast(self.device, self.precision):
                out = self.forward_features(pixels)
            return out.float().cpu().numpy()

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "input_px": self.input_px,
            "mean": list(self.mean),
            "std": list(self.std),
            **self._identity,
        }
