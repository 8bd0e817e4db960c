"""[train]: CellViT training (`histocurate train`).

Every key left unset (None) takes the preset's value (`histocurate.cellvit.presets`); a
key that is set overrides it, from the file, the environment or a flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from histocurate.config.base import Section

# Keys passed to the preset as overrides (same names as `TrainSettings`' fields).
SETTING_KEYS = (
    "encoder",
    "epochs",
    "batch_size",
    "micro_batch",
    "precision",
    "workers",
    "label_sets",
    "max_minutes",
    "val_every",
    "seed",
    "lr",
    "compile",
    "channels_last",
)


class TrainConfig(Section):
    """Defaults of `histocurate train` (flags override them)."""

    preset: Literal["paper", "cellvit", "tiny"] = Field(
        "paper", description="Training preset: paper, cellvit or tiny."
    )
    encoder: str | None = Field(
        None, description="Encoder: h0-mini, phikon or timm:<name> (default: the preset's)."
    )
    weights: Path | None = Field(
        None,
        description="Encoder weights (file or folder; default: the Hugging Face cache), or a "
        "CellViT checkpoint (ours or a released HistoPLUS one) to fine-tune.",
    )
    new_classes: bool = Field(
        False,
        description="Fine-tuning: start the type outputs of dataset classes the checkpoint "
        "lacks from random weights (otherwise such a dataset is refused).",
    )
    epochs: int | None = Field(None, ge=1, description="Epochs (preset's by default).")
    batch_size: int | None = Field(None, ge=1, description="Global batch, all processes.")
    micro_batch: int | None = Field(
        None, ge=1, description="Tiles per process and forward pass (gradient accumulation)."
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] | None = Field(
        None,
        description="auto: bf16 on GPUs that have it, fp16 + loss scaling on others, "
        "fp32 on the CPU.",
    )
    device: str = Field("auto", description="'auto' (cuda when present), 'cpu', 'cuda:1'.")
    workers: int | None = Field(None, ge=0, description="DataLoader workers per process.")
    label_sets: bool | None = Field(
        None, description="Train the type head on the label sets of undetermined nuclei."
    )
    max_minutes: float | None = Field(
        None, gt=0, description="Stop after this wall time (validate and save first)."
    )
    val_every: int | None = Field(None, ge=1, description="Validate every N epochs.")
    seed: int | None = Field(None, description="Seed of the run (preset's by default).")
    lr: float | None = Field(None, gt=0, description="Learning rate (preset's by default).")
    compile: bool | None = Field(None, description="torch.compile the model.")
    channels_last: bool | None = Field(None, description="Channels-last memory (default: on).")
    runs_dir: Path = Field(Path("runs"), description="Where runs go, relative to the workspace.")

    def setting_overrides(self) -> dict[str, Any]:
        """The keys that override the preset (unset ones left out)."""
        found = {k: getattr(self, k) for k in SETTING_KEYS}
        return {k: v for k, v in found.items() if v is not None}
