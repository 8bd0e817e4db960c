"""Training NuClick: weighted BCE + Dice, validation Dice per epoch, checkpoints, resume.

Recipe (the public one and the paper's): lr 1e-3, batch 64, 60 epochs, RMSprop, loss =
weighted BCE (background 1, target 2, other nuclei 4) + (1 - batch Dice), learning rate
halved when validation Dice stalls. Mixed precision (bfloat16) on CUDA.

Files in ``out_dir``: ``last.pt`` (weights, optimizer, scheduler, epoch, history: what
resume needs), ``best.pt`` (best validation Dice), ``history.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

from histocurate.torchutil import amp_precision, autocast, resolve_device
from nuclick.model import Checkpoint, NuClick, load_state, save_model
from nuclick.train_data import NuclickPatchDataset


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "rmsprop"  # or "adam"
    width: float = 1.0
    steps_per_epoch: int | None = None  # None: one pass over the training patches
    val_batches: int | None = None  # None: all of the validation set
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    mpp: float = 0.25
    lr_patience: int = 5


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_dice: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_dice: float = -1.0
    initial_dice: float = float("nan")  # before the first step (fresh runs)
    out_dir: Path | None = None


def weighted_bce_dice(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted BCE (mean over pixels) + (1 - Dice computed over the whole batch)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weights)
    prob = torch.sigmoid(logits)
    dice = (2 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + (1 - dice)


def patch_dice(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Dice of the thresholded prediction of each patch, (N,)."""
    pred = (torch.sigmoid(logits.float()) > threshold).float().flatten(1)
    tgt = target.flatten(1)
    inter = (pred * tgt).sum(1)
    return (2 * inter + 1e-6) / (pred.sum(1) + tgt.sum(1) + 1e-6)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    *,
    amp: bool,
    max_batches: int | None = None,
) -> float:
    """Mean per-patch Dice over a validation loader."""
    model.eval()
    scores = []
    for b, (inputs, target, _) in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        with autocast(device, amp_precision(amp, device)):
            logits = model(inputs.to(device))
        scores.append(patch_dice(logits, target.to(device)).cpu())
    return float(torch.cat(scores).mean()) if scores else float("nan")


def _optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: use 'rmsprop' or 'adam'")


def train(
    train_set: NuclickPatchDataset,
    val_set: NuclickPatchDataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume from ``out_dir/last.pt``) and return the per-epoch history."""
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(
            f"need nuclei to train on: {len(train_set)} training and {len(val_set)} validation"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = NuClick(width=config.width).to(device)
    optimizer = _optimizer(config.optimizer, model.parameters(), config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=config.lr_patience
    )
    result = TrainResult(out_dir=out)
    start_epoch = 0
    last = out / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        load_state(model, state["state_dict"], origin=str(last))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        result.history = [EpochRecord(**r) for r in state["history"]]
        result.best_dice = float(state["best_dice"])
        start_epoch = int(state["epoch"]) + 1
        log(f"resumed from {last} at epoch {start_epoch}")
    generator = torch.Generator().manual_seed(config.seed + start_epoch)
    steps = config.steps_per_epoch or math.ceil(len(train_set) / config.batch_size)
    sampler = RandomSampler(
        train_set, replacement=True, num_samples=steps * config.batch_size, generator=generator
    )
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=config.num_workers,
        pin_memory=pin,
        persistent_workers=config.num_workers > 0,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.num_workers,
        pin_memory=pin,
    )
    if start_epoch == 0:
        result.initial_dice = evaluate(
            model, val_loader, device, amp=config.amp, max_batches=config.val_batches
        )
        log(f"validation Dice before training: {result.initial_dice:.4f}")
    info = Checkpoint(width=config.width, mpp=config.mpp, patch_size=train_set.patch_size)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        train_set.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        for inputs, target, weights in train_loader:
            inputs, target = inputs.to(device, non_blocking=True), target.to(device)
            weights = weights.to(device)
            with autocast(device, amp_precision(config.amp, device)):
                logits = model(inputs)
            loss = weighted_bce_dice(logits, target, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()), count + 1
        dice = evaluate(model, val_loader, device, amp=config.amp, max_batches=config.val_batches)
        scheduler.step(dice)
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(count, 1),
            val_dice=dice,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=time.perf_counter() - began,
        )
        result.history.append(record)
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {record.train_loss:.4f} "
            f"val Dice {dice:.4f} lr {record.lr:.2g} ({record.seconds:.1f} s)"
        )
        if dice > result.best_dice:
            result.best_dice = dice
            save_model(out / "best.pt", model, info, epoch=epoch, val_dice=dice)
        save_model(
            last,
            model,
            info,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            epoch=epoch,
            history=[asdict(r) for r in result.history],
            best_dice=result.best_dice,
            config=asdict(config),
        )
        (out / "history.json").write_text(
            json.dumps([asdict(r) for r in result.history], indent=1), encoding="utf-8"
        )
    return result
