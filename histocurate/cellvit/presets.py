"""Training settings and the three presets of ``histocurate train --preset``.

- ``paper``: the HistoPLUS paper's recipe (Methods): Adam, lr 1e-5, weight decay 1e-5,
  betas (0.9, 0.99), constant learning rate, global batch 16, 150 epochs, validation every
  10, seed 111, 448 px tiles at 40x, pretrained H0-mini, CellViT's augmentations and
  oversampling (gamma 0.85), mixed precision.
- ``cellvit``: CellViT's own recipe: AdamW, lr 3e-4, betas (0.85, 0.95), weight decay 1e-4,
  learning rate x0.95 per epoch, encoder frozen for the first 25 epochs. Where the issue is
  silent the values are CellViT's (its SAM-H PanNuke configuration): 130 epochs, global
  batch 16, validation every epoch, seed 19.
- ``tiny``: a small ViT (h0-mini layout: 4 blocks of width 64, 4 registers) with random
  weights and a decoder 8 times narrower, trained on random crops of 112 px of the dataset's
  tiles (validated on whole tiles), for CPU tests and the demo (AdamW, lr 1e-3: random
  weights learn slowly at 1e-5).

Settings are a frozen pydantic model: a misspelt key is an error, never ignored.

>>> s = preset("paper", epochs=2)
>>> s.optimizer, s.lr, s.betas, s.batch_size, s.epochs, s.val_every, s.seed, s.tile_size
('adam', 1e-05, (0.9, 0.99), 16, 2, 10, 111, 448)
>>> preset("tiny", epochz=3)
Traceback (most recent call last):
...
histocurate.errors.UserInputError: training settings: unknown setting 'epochz'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from histocurate.cellvit.losses import LossWeights
from histocurate.cellvit.model import TINY_ARCH
from histocurate.errors import UserInputError

PresetName = Literal["paper", "cellvit", "tiny"]
PRESET_NAMES: tuple[str, ...] = ("paper", "cellvit", "tiny")
Precision = Literal["auto", "bf16", "fp16", "fp32"]


class LossSettings(BaseModel):
    """The weights of the seven loss terms (CellViT's paper configuration by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    np_ft: float = 1.0
    np_dice: float = 1.0
    hv_mse: float = 2.5
    hv_msge: float = 8.0
    nt_ce: float = 0.5
    nt_dice: float = 0.2
    nt_ft: float = 0.5

    def weights(self) -> LossWeights:
        return LossWeights(**self.model_dump())


class TrainSettings(BaseModel):
    """Everything that decides a training run (recorded in ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName
    # model
    encoder: str = "h0-mini"
    pretrained: bool = True
    arch: dict[str, Any] = Field(default_factory=dict)
    decoder_divisor: int = Field(1, ge=1)
    tile_size: int | None = Field(448, gt=0, description="None: the dataset's tile size.")
    crop: int | None = Field(
        None, gt=0, description="Train on random crops of at most this side (None: whole tiles)."
    )
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    # optimisation
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay: float | None = Field(None, gt=0, le=1, description="x per epoch; None: constant.")
    freeze_encoder_epochs: int = Field(0, ge=0)
    epochs: int = Field(150, ge=1)
    batch_size: int = Field(16, ge=1, description="Global batch (all ranks, all micro-steps).")
    micro_batch: int | None = Field(
        None, ge=1, description="Per rank and step; None: no gradient accumulation."
    )
    val_every: int = Field(10, ge=1)
    seed: int = 111
    precision: Precision = "auto"
    loss: LossSettings = Field(default_factory=LossSettings)
    msge_swapped_axes: bool = False
    # data
    augment: bool = True
    oversampling_gamma: float | None = Field(0.85, ge=0, le=1, description="None: uniform.")
    indication_weights: bool = True
    label_sets: bool = False
    workers: int = Field(4, ge=0, description="DataLoader worker processes per rank.")
    # speed and budget
    channels_last: bool = Field(
        True,
        description="Channels-last memory. Measured on the CPU (tiny model, 112 px, batch "
        "8): +10-20 % images/s with 1 and 2 threads; on CUDA the usual choice for convolutions "
        "under AMP (benchmarks/gpu_train.py measures both).",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model. Measured on the CPU (tiny, 112 px): ~1.3-1.5x "
        "the images/s after a first compile of ~100 s (cached afterwards), so off by default "
        "(tests, short demo runs); benchmarks/gpu_train.py measures it on a GPU.",
    )
    max_minutes: float | None = Field(None, gt=0, description="Stop after this wall time.")
    val_batch: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _batches(self) -> TrainSettings:
        if self.micro_batch is not None and self.micro_batch > self.batch_size:
            raise ValueError(f"micro_batch {self.micro_batch} > batch_size {self.batch_size}")
        return self

    def accumulation(self, world_size: int) -> tuple[int, int]:
        """(micro-batch per rank, accumulation steps) holding the global batch on
        ``world_size`` ranks; a batch that does not divide is an error naming the fix."""
        if self.batch_size % world_size:
            raise UserInputError(
                f"global batch {self.batch_size} does not split over {world_size} processes; "
                f"use a --batch-size that is a multiple of {world_size}"
            )
        per_rank = self.batch_size // world_size
        micro = min(self.micro_batch or per_rank, per_rank)
        if per_rank % micro:
            raise UserInputError(
                f"micro-batch {micro} does not divide the {per_rank} tiles each process takes "
                f"per step (global batch {self.batch_size} over {world_size}); pick a divisor"
            )
        return micro, per_rank // micro

    def comparable(self) -> dict[str, Any]:
        """The settings that must agree for a run to be resumed with them (what may change
        on a resume: the epochs, the time budget, the loader workers)."""
        return self.model_dump(mode="json", exclude={"epochs", "max_minutes", "workers"})


_PAPER: dict[str, Any] = {"preset": "paper"}
_CELLVIT: dict[str, Any] = {
    "preset": "cellvit",
    "optimizer": "adamw",
    "lr": 3e-4,
    "betas": (0.85, 0.95),
    "weight_decay": 1e-4,
    "lr_decay": 0.95,
    "freeze_encoder_epochs": 25,
    "epochs": 130,
    "val_every": 1,
    "seed": 19,
}
_TINY: dict[str, Any] = {
    "preset": "tiny",
    "pretrained": False,
    "arch": dict(TINY_ARCH),
    "decoder_divisor": 8,
    "tile_size": None,
    "crop": 112,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "epochs": 30,
    "batch_size": 8,
    "val_every": 5,
    "workers": 0,
}
PRESETS: dict[str, dict[str, Any]] = {"paper": _PAPER, "cellvit": _CELLVIT, "tiny": _TINY}


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown setting {where!r}")
        else:
            parts.append(f"{where or 'settings'}: {item['msg']}")
    return "training settings: " + "; ".join(parts)


def settings_from(data: dict[str, Any]) -> TrainSettings:
    """Validated settings from plain data (``config.json``); errors as `UserInputError`."""
    try:
        return TrainSettings.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(_describe(exc)) from None


def preset(name: str, **overrides: Any) -> TrainSettings:
    """The settings of preset ``name`` with ``overrides`` (None values are left out)."""
    if name not in PRESETS:
        raise UserInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("preset", name) != name:
        raise UserInputError(f"preset {name!r} given with preset={given['preset']!r}")
    return settings_from({**PRESETS[name], **given, "preset": name})
