"""CellViT's losses, as pure functions of logits and targets, with the softmax applied once.

Per branch (CellViT's paper weights are `LossWeights`' defaults):

- NP: binary Focal Tversky + Dice over both channels;
- HV: MSE + MSGE (MSE of the maps' gradients on nucleus pixels, 5x5 Sobel-like kernels);
- NT: cross-entropy + Dice + multi-class Focal Tversky, pixels marked `IGNORE_TYPE` left
  out; with ``label_sets``, an undetermined pixel whose label set is known contributes
  ``-log(sum of the probabilities of its proposed labels)`` to the cross-entropy term.

Dice is summed over classes (background included) and Focal Tversky over classes, as
CellViT. Where CellViT softmaxes its Focal Tversky inputs a second time, these take the
probabilities of one softmax. The MSGE differentiates the horizontal map along x (columns)
and the vertical one along y, as the paper and TensorFlow HoVer-Net; CellViT's PyTorch port
swaps the axes (``msge_swapped_axes=True`` reproduces it). Everything runs in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from histocurate.cellvit.targets import IGNORE_TYPE, Targets

DICE_SMOOTH = 1e-3
FT_SMOOTH = 1e-6


def dice_loss(
    probs: torch.Tensor, onehot: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over classes of ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)``, s = 1e-3,
    the sums over the batch and pixels (``valid``: (B, H, W) pixels to count)."""
    if valid is not None:
        probs, onehot = probs * valid[:, None], onehot * valid[:, None]
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return (1.0 - (2.0 * inter + DICE_SMOOTH) / (total + DICE_SMOOTH)).sum()


def focal_tversky_per_class(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per class: ``(1 - (TP + s) / (TP + alpha FN + beta FP + s)) ** gamma`` (C,)."""
    if valid is not None:
        probs, onehot = probs * valid[:, None], onehot * valid[:, None]
    dims = (0, 2, 3)
    tp = (probs * onehot).sum(dims)
    fn = (onehot * (1.0 - probs)).sum(dims)
    fp = (probs * (1.0 - onehot)).sum(dims)
    index = (tp + FT_SMOOTH) / (tp + alpha * fn + beta * fp + FT_SMOOTH)
    return (1.0 - index).clamp_min(0.0) ** gamma


def focal_tversky_binary(
    probs: torch.Tensor, onehot: torch.Tensor, *, alpha: float, beta: float, gamma: float
) -> torch.Tensor:
    """CellViT's binary Focal Tversky: both channels flattened together (one index)."""
    tp = (probs * onehot).sum()
    fn = (onehot * (1.0 - probs)).sum()
    fp = (probs * (1.0 - onehot)).sum()
    index = (tp + FT_SMOOTH) / (tp + alpha * fn + beta * fp + FT_SMOOTH)
    return (1.0 - index).clamp_min(0.0) ** gamma


def gradient_kernels(size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """HoVer-Net's MSGE kernels: ``k_x = x / (x^2 + y^2)``, ``k_y = y / (x^2 + y^2)`` on a
    ``size`` x ``size`` grid centred on 0; ``k_x`` varies along columns (x)."""
    half = size // 2
    r = torch.arange(-half, half + 1, dtype=torch.float32)
    y, x = torch.meshgrid(r, r, indexing="ij")  # y varies along rows, x along columns
    norm = x * x + y * y + 1e-15
    return x / norm, y / norm


def map_gradients(hv: torch.Tensor, *, swapped_axes: bool = False) -> torch.Tensor:
    """d(channel 0)/dx and d(channel 1)/dy of (B, 2, H, W) maps (zero padding)."""
    kx, ky = gradient_kernels()
    if swapped_axes:
        kx, ky = ky, kx
    weight = torch.stack([kx, ky])[:, None].to(hv.device)
    return F.conv2d(hv, weight, padding=kx.shape[-1] // 2, groups=2)


def msge_loss(
    pred: torch.Tensor, target: torch.Tensor, focus: torch.Tensor, *, swapped_axes: bool = False
) -> torch.Tensor:
    """``sum(focus (grad pred - grad target)^2) / (sum(focus) + 1e-8)`` over both channels,
    ``focus`` the (B, H, W) nucleus mask counted once per channel."""
    diff = map_gradients(pred, swapped_axes=swapped_axes)
    diff = diff - map_gradients(target, swapped_axes=swapped_axes)
    mask = focus[:, None].to(diff.dtype).expand_as(diff)
    return (mask * diff * diff).sum() / (mask.sum() + 1e-8)


def label_set_nll(log_probs: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Per pixel ``-log(sum_{c in set} p_c)`` for (B, C, H, W) log-probabilities and (B, H, W)
    int bitmasks (0: no set; those pixels give 0)."""
    n_classes = log_probs.shape[1]
    classes = torch.arange(n_classes, device=bits.device).view(1, -1, 1, 1)
    member = ((bits[:, None] >> classes) & 1).bool()
    masked = log_probs.masked_fill(~member, float("-inf"))
    out = -torch.logsumexp(masked, dim=1)
    return torch.where(bits > 0, out, torch.zeros_like(out))


def batch_targets(
    batch: Sequence[Targets], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Stack per-tile `Targets` into the keyword arguments of `CellViTLoss` (a collate
    function for the loader, or called on the device side).

    >>> import numpy as np
    >>> from histocurate.cellvit.targets import build_targets
    >>> t = build_targets(np.ones((4, 4), int), np.full((4, 4), 2))
    >>> {k: tuple(v.shape) for k, v in batch_targets([t, t]).items()}["hv_target"]
    (2, 2, 4, 4)
    """

    def stack(name: str, dtype: torch.dtype) -> torch.Tensor:
        arrays = [torch.from_numpy(getattr(t, name)) for t in batch]
        return torch.stack(arrays).to(device=device, dtype=dtype, non_blocking=True)

    return {
        "np_target": stack("np_target", torch.long),
        "hv_target": stack("hv_target", torch.float32),
        "nt_target": stack("nt_target", torch.long),
        "sets": stack("sets", torch.int32),
    }


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    """Weights of the seven terms (CellViT's paper configuration by default)."""

    np_ft: float = 1.0
    np_dice: float = 1.0
    hv_mse: float = 2.5
    hv_msge: float = 8.0
    nt_ce: float = 0.5
    nt_dice: float = 0.2
    nt_ft: float = 0.5


@dataclass(frozen=True, kw_only=True)
class LossResult:
    """The weighted total (for backward) and each unweighted term (detached 0-d tensors:
    no device sync until the loop reads them)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CellViTLoss:
    """The combined loss. ``outputs``: the model's dict; targets: ``np`` (B, H, W) {0, 1},
    ``hv`` (B, 2, H, W), ``nt`` (B, H, W) with `IGNORE_TYPE`, ``sets`` (B, H, W) bitmasks."""

    weights: LossWeights = field(default_factory=LossWeights)
    ft_alpha: float = 0.7
    ft_beta: float = 0.3
    ft_gamma: float = 4.0 / 3.0
    label_sets: bool = False
    msge_swapped_axes: bool = False
    class_weights: tuple[float, ...] | None = None

    def __call__(
        self,
        outputs: dict[str, torch.Tensor],
        *,
        np_target: torch.Tensor,
        hv_target: torch.Tensor,
        nt_target: torch.Tensor,
        sets: torch.Tensor | None = None,
    ) -> LossResult:
        ft = {"alpha": self.ft_alpha, "beta": self.ft_beta, "gamma": self.ft_gamma}
        np_logits = outputs["np"].float()
        np_onehot = F.one_hot(np_target.long(), 2).permute(0, 3, 1, 2).float()
        np_probs = np_logits.softmax(1)
        hv = outputs["hv"].float()
        hv_t = hv_target.float()
        tp_logits = outputs["tp"].float()
        n_classes = tp_logits.shape[1]
        log_p = tp_logits.log_softmax(1)
        tp_probs = log_p.exp()
        nt = nt_target.long()
        valid = nt != IGNORE_TYPE
        nt_onehot = F.one_hot(torch.where(valid, nt, 0), n_classes).permute(0, 3, 1, 2).float()
        validf = valid.float()
        nll = -log_p.gather(1, torch.where(valid, nt, 0)[:, None])[:, 0] * validf
        count = validf.sum()
        if self.label_sets and sets is not None:
            use = (sets > 0) & ~valid
            nll = nll + label_set_nll(log_p, torch.where(use, sets, 0))
            count = count + use.float().sum()
        per_class = focal_tversky_per_class(tp_probs, nt_onehot, valid=validf, **ft)
        if self.class_weights is not None:
            if len(self.class_weights) != n_classes:
                raise ValueError(f"{len(self.class_weights)} class weights for {n_classes} classes")
            per_class = per_class * torch.tensor(self.class_weights, device=per_class.device)
        terms = {
            "np_ft": focal_tversky_binary(np_probs, np_onehot, **ft),
            "np_dice": dice_loss(np_probs, np_onehot),
            "hv_mse": F.mse_loss(hv, hv_t),
            "hv_msge": msge_loss(hv, hv_t, np_target, swapped_axes=self.msge_swapped_axes),
            "nt_ce": nll.sum() / count.clamp_min(1.0),
            "nt_dice": dice_loss(tp_probs, nt_onehot, validf),
            "nt_ft": per_class.sum(),
        }
        total = sum(
            (getattr(self.weights, f.name) * terms[f.name] for f in fields(self.weights)),
            start=torch.zeros((), device=hv.device),
        )
        return LossResult(total=total, terms={k: v.detach() for k, v in terms.items()})
