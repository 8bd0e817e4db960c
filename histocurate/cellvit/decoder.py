"""CellViT's UNETR-style decoder: a shared neck and one branch per output (NP, HV, NT).

Layout and module names follow the released HistoPLUS checkpoints (``neck.necks.0..3``;
each branch ``bottleneck_upsampler``, ``decoder3_upsampler`` ... ``decoder0_header``):

- neck 0: two 3x3 conv blocks on the image (3 -> 32 -> 64) at full resolution;
- neck 1..3: the skips of blocks 1..3, upsampled by 2x2 transposed convs (three, two, one);
- a branch: transposed conv of the last skip, then three stages of [concatenate the neck
  map, conv blocks, transposed conv], then the header (two conv blocks and a 1x1 conv).

Patch 14 gives maps of (S/14)*16 px after three upsamplings: the branch resizes them
(bilinear) to the input size before the full-resolution stage, computed from the input
shape (HistoPLUS fixes it at construction and so rejects other sizes).

>>> w = DecoderWidths().scaled(8)
>>> w.bottleneck, w.neck0
(64, (4, 8))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, kw_only=True)
class DecoderWidths:
    """Channel widths; the defaults are CellViT's for encoders of width >= 512."""

    bottleneck: int = 512
    skip1: int = 512
    skip2: int = 256
    stage3: int = 256
    stage2: int = 128
    stage1: int = 64
    neck0: tuple[int, int] = (32, 64)

    @classmethod
    def for_embed_dim(cls, embed_dim: int) -> DecoderWidths:
        """CellViT's rule: narrower skips and bottleneck below 512 channels."""
        if embed_dim < 512:
            return cls(bottleneck=312, skip1=256, skip2=128)
        return cls()

    def scaled(self, divisor: int) -> DecoderWidths:
        """Every width divided by ``divisor`` (at least 2): tiny models for tests."""

        def d(c: int) -> int:
            return max(2, c // divisor)

        return DecoderWidths(
            bottleneck=d(self.bottleneck),
            skip1=d(self.skip1),
            skip2=d(self.skip2),
            stage3=d(self.stage3),
            stage2=d(self.stage2),
            stage1=d(self.stage1),
            neck0=(d(self.neck0[0]), d(self.neck0[1])),
        )


class Conv2DBlock(nn.Module):
    """3x3 conv (bias), BatchNorm, ReLU, Dropout: keys ``block.0`` (conv), ``block.1`` (BN)."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class Deconv2DBlock(nn.Module):
    """2x2 stride-2 transposed conv, 3x3 conv, BatchNorm, ReLU, Dropout."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_out, 2, stride=2),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, 2, stride=2)


class Neck(nn.Module):
    """The shared skip path: ``necks[0]`` on the image, ``necks[1..3]`` on skips 1..3."""

    def __init__(self, embed_dim: int, widths: DecoderWidths, dropout: float = 0.0) -> None:
        super().__init__()
        w, p = widths, dropout
        self.necks = nn.ModuleList(
            [
                nn.Sequential(Conv2DBlock(3, w.neck0[0], p), Conv2DBlock(*w.neck0, p)),
                nn.Sequential(
                    Deconv2DBlock(embed_dim, w.skip1, p),
                    Deconv2DBlock(w.skip1, w.skip2, p),
                    Deconv2DBlock(w.skip2, w.stage2, p),
                ),
                nn.Sequential(
                    Deconv2DBlock(embed_dim, w.skip1, p), Deconv2DBlock(w.skip1, w.stage3, p)
                ),
                nn.Sequential(Deconv2DBlock(embed_dim, w.bottleneck, p)),
            ]
        )

    def forward(self, image: torch.Tensor, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[n0, n1, n2, n3]`` from the image and the first three skips."""
        return [self.necks[0](image)] + [self.necks[i](skips[i - 1]) for i in (1, 2, 3)]


class DecoderBranch(nn.Module):
    """One output branch: bottleneck skip + neck maps -> ``out_channels`` maps at input size."""

    def __init__(
        self, embed_dim: int, out_channels: int, widths: DecoderWidths, dropout: float = 0.0
    ) -> None:
        super().__init__()
        w, p = widths, dropout
        self.bottleneck_upsampler = _up(embed_dim, w.bottleneck)
        self.decoder3_upsampler = nn.Sequential(
            Conv2DBlock(2 * w.bottleneck, w.bottleneck, p),
            Conv2DBlock(w.bottleneck, w.bottleneck, p),
            Conv2DBlock(w.bottleneck, w.bottleneck, p),
            _up(w.bottleneck, w.stage3),
        )
        self.decoder2_upsampler = nn.Sequential(
            Conv2DBlock(2 * w.stage3, w.stage3, p),
            Conv2DBlock(w.stage3, w.stage3, p),
            _up(w.stage3, w.stage2),
        )
        self.decoder1_upsampler = nn.Sequential(
            Conv2DBlock(2 * w.stage2, w.stage2, p),
            Conv2DBlock(w.stage2, w.stage2, p),
            _up(w.stage2, w.stage1),
        )
        n0 = w.neck0[1]
        self.decoder0_header = nn.Sequential(
            Conv2DBlock(n0 + w.stage1, w.stage1, p),
            Conv2DBlock(w.stage1, w.stage1, p),
            nn.Conv2d(w.stage1, out_channels, 1),
        )

    def forward(self, bottleneck: torch.Tensor, necks: Sequence[torch.Tensor]) -> torch.Tensor:
        n0, n1, n2, n3 = necks
        x = self.bottleneck_upsampler(bottleneck)
        x = self.decoder3_upsampler(torch.cat([n3, x], dim=1))
        x = self.decoder2_upsampler(torch.cat([n2, x], dim=1))
        x = self.decoder1_upsampler(torch.cat([n1, x], dim=1))
        if x.shape[-2:] != n0.shape[-2:]:  # patch 14: (S/14)*16 -> S
            x = F.interpolate(x, size=n0.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.decoder0_header(torch.cat([n0, x], dim=1))
        return out
