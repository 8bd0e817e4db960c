"""[features]: tile features (`histocurate embed`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from histocurate.config.base import Section


class FeaturesConfig(Section):
    """Tile features (`histocurate embed`): which encoder, where its weights are, how to run."""

    encoder: str = Field(
        "builtin",
        description="Encoder: 'builtin' (no weights), 'phikon', 'h0-mini' or 'timm:<model name>'.",
    )
    device: str = Field("auto", description="'auto' (cuda when present), 'cpu', 'cuda', 'cuda:1'.")
    batch_size: int = Field(64, ge=1, description="Tiles per forward pass.")
    num_workers: int = Field(2, ge=0, description="Data-loader processes reading tiles.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="'auto': bf16 autocast on GPU, fp32 on CPU."
    )
    phikon_weights: Path | None = Field(
        None, description="Phikon folder (config.json + model.safetensors) or HF cache folder."
    )
    h0_mini_weights: Path | None = Field(
        None, description="H0-mini weight file or folder (model.safetensors / pytorch_model.bin)."
    )
    timm_weights: Path | None = Field(
        None, description="Weight file (state_dict) for the 'timm:<name>' encoder."
    )
    hf_cache: Path | None = Field(
        None, description="Hugging Face hub cache to search (default: HF_HUB_CACHE, HF_HOME)."
    )
    h0_mini_pooling: Literal["cls", "cls+mean"] = Field(
        "cls", description="H0-mini output: CLS token (768) or CLS + mean patch token (1536)."
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler (tcp://host:port) for the Prefect flow; None: threads."
    )
