"""[cohort]: what the cohort is and where its manifest lies."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from histocurate.config.base import Section

# TCGA study codes: the indications a manifest may name unless the config lists others.
TCGA_INDICATIONS: tuple[str, ...] = (
    "ACC", "BLCA", "BRCA", "CESC", "CHOL", "COAD", "DLBC", "ESCA", "GBM", "HNSC", "KICH",
    "KIRC", "KIRP", "LAML", "LGG", "LIHC", "LUAD", "LUSC", "MESO", "OV", "PAAD", "PCPG",
    "PRAD", "READ", "SARC", "SKCM", "STAD", "TGCT", "THCA", "THYM", "UCEC", "UCS", "UVM",
)  # fmt: skip


class CohortConfig(Section):
    """What the cohort is and where its manifest lies."""

    name: str = Field("cohort", description="Default cohort name for manifest rows without one.")
    manifest: Path = Field(
        Path("slides.csv"),
        description="Slide manifest (CSV or Parquet), relative to the workspace.",
    )
    indications: list[str] = Field(
        default_factory=lambda: list(TCGA_INDICATIONS),
        description="Indications a manifest may name (TCGA study codes by default).",
    )
