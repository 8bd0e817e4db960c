"""`nuclick train`: train NuClick on CoNSeP, PanNuke or masks-table data (standalone).

Example::

    nuclick train --pannuke /data/pannuke/fold1 --consep /data/CoNSeP/Train \\
        --val-pannuke /data/pannuke/fold3 --out runs/nuclick --epochs 60
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nuclick.errors import NuClickError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nuclick", description="NuClick point-to-mask U-Net.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="Train (or resume) a NuClick model.")
    for prefix, what in (("", "training"), ("val-", "validation")):
        t.add_argument(
            f"--{prefix}consep",
            type=Path,
            action="append",
            default=[],
            help=f"CoNSeP-layout folder ({what}; Images/*.png + Labels/*.mat).",
        )
        t.add_argument(
            f"--{prefix}pannuke",
            type=Path,
            action="append",
            default=[],
            help=f"PanNuke-layout folder ({what}; images.npy + masks.npy).",
        )
        t.add_argument(
            f"--{prefix}masks",
            type=Path,
            action="append",
            default=[],
            help=f"Masks table Parquet ({what}); tiles as <tile_id>.png in --images.",
        )
    t.add_argument("--images", type=Path, help="Folder of <tile_id>.png for --masks tables.")
    t.add_argument("--toy", type=int, default=0, help="Add N toy synthetic images (smoke runs).")
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="Without validation sources: fraction of the images held out (0.1).",
    )
    t.add_argument("--out", type=Path, required=True, help="Output folder (checkpoints, history).")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", choices=["rmsprop", "adam"], default="rmsprop")
    t.add_argument("--width", type=float, default=1.0, help="Channel width multiplier (1).")
    t.add_argument("--patch-size", type=int, default=128)
    t.add_argument("--steps-per-epoch", type=int, default=None)
    t.add_argument("--workers", type=int, default=4, help="DataLoader worker processes.")
    t.add_argument("--device", default="auto")
    t.add_argument("--no-amp", action="store_true", help="No bfloat16 autocast on CUDA.")
    t.add_argument("--mpp", type=float, default=0.25, help="Resolution of the data (um/px).")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="Start afresh even if last.pt exists.")
    return parser


def _load(consep: list[Path], pannuke: list[Path], masks: list[Path], images: Path | None) -> list:
    from nuclick.train_data import load_consep, load_masks_table, load_pannuke

    samples = []
    for folder in consep:
        samples += load_consep(folder)
    for folder in pannuke:
        samples += load_pannuke(folder)
    for table in masks:
        if images is None:
            raise NuClickError("--masks needs --images (a folder of <tile_id>.png)")
        import pandas as pd
        from skimage.io import imread

        frame = pd.read_parquet(table)
        samples += load_masks_table(frame, lambda t: imread(images / f"{t}.png")[..., :3])
    return samples


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from nuclick.testing.synthetic import toy_samples
    from nuclick.train import TrainConfig, train
    from nuclick.train_data import NuclickPatchDataset

    samples = _load(args.consep, args.pannuke, args.masks, args.images)
    if args.toy:
        samples += toy_samples(args.toy, seed=args.seed, size=256, n_nuclei=40)
    val = _load(args.val_consep, args.val_pannuke, args.val_masks, args.images)
    if not samples:
        raise NuClickError("no training data: give --consep, --pannuke, --masks or --toy")
    if not val:
        order = np.random.default_rng(args.seed).permutation(len(samples))
        n_val = max(1, round(args.val_fraction * len(samples)))
        val = [samples[i] for i in order[:n_val]]
        samples = [samples[i] for i in order[n_val:]]
    train_set = NuclickPatchDataset(samples, patch_size=args.patch_size, seed=args.seed)
    val_set = NuclickPatchDataset(val, patch_size=args.patch_size, augment=False, seed=args.seed)
    print(
        f"{len(train_set)} training nuclei ({len(samples)} images), "
        f"{len(val_set)} validation nuclei ({len(val)} images)"
    )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        width=args.width,
        steps_per_epoch=args.steps_per_epoch,
        num_workers=args.workers,
        device=args.device,
        amp=not args.no_amp,
        seed=args.seed,
        mpp=args.mpp,
    )
    result = train(train_set, val_set, config, args.out, resume=not args.no_resume)
    print(f"best validation Dice {result.best_dice:.4f}; weights: {args.out / 'best.pt'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``nuclick`` command; bad input prints a message and returns 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
    except NuClickError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
