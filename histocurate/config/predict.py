"""[predict]: CellViT inference (`histocurate predict`) and what the next selection round
reads of its predictions (`histocurate select --labels-from predictions`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from histocurate.config.base import Section


class PredictConfig(Section):
    """Defaults of `histocurate predict` (flags override them)."""

    device: str = Field("auto", description="'auto' (cuda when present), 'cpu', 'cuda:1'.")
    batch_size: int = Field(8, ge=1, description="Windows per forward pass.")
    precision: str = Field(
        "auto", description="auto (bf16 on a GPU that has it, fp32 on CPU), bf16, fp16, fp32."
    )
    window_um: float = Field(
        196.0,
        gt=0,
        description="Side of an inference window, um (784 px at 0.25 um/px, as HistoPLUS); "
        "rounded to a multiple of the encoder's patch at the model's resolution.",
    )
    margin_um: float = Field(
        16.0,
        ge=0,
        description="Overlap on each side of a window, um (64 px at 0.25 um/px): a nucleus "
        "whose centre lies in a window's core is whole in it unless wider than 2 x this.",
    )
    workers: int | None = Field(
        None, ge=0, description="Post-processing processes (None: CPUs - 1; 0: in-process)."
    )
    read_threads: int = Field(4, ge=1, description="Threads reading windows ahead of the model.")
    drop_untyped: bool = Field(
        True, description="Drop nuclei whose pixels all voted background (HistoPLUS does)."
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler (tcp://host:port) for the post-processing; None: local."
    )
    selection_labels_from: str = Field(
        "annotations",
        description="Presence labels of `select`: 'annotations' (consensus, then points), "
        "'predictions' (the newest model's), or 'predictions:<model>'.",
    )
    presence_min_cells: int = Field(
        1, ge=1, description="A tile holds a type when the model found at least this many..."
    )
    presence_min_confidence: float = Field(
        0.5, ge=0, le=1, description="... cells of it whose type vote share is at least this."
    )

    @field_validator("selection_labels_from")
    @classmethod
    def _source(cls, value: str) -> str:
        if value not in ("annotations", "predictions") and not (
            value.startswith("predictions:") and len(value) > len("predictions:")
        ):
            raise ValueError("use 'annotations', 'predictions' or 'predictions:<model>'")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError("use auto, bf16, fp16 or fp32")
        return value
