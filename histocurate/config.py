"""The one configuration object that reaches every stage.

Read, lowest priority first, from the workspace's ``histocurate.toml``, then environment
variables ``HISTOCURATE_<SECTION>__<KEY>`` (e.g. ``HISTOCURATE_TILING__TISSUE_THRESHOLD=0.3``),
then CLI flags. Unknown keys are errors in all three: a typo never goes silently unused.
Secrets (Cytomine keys) are never part of this object; they come from the environment or a
Prefect Secret block at the moment of use.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from histocurate.errors import WorkspaceError
from histocurate.labels import RARE_LABELS

CONFIG_FILE = "histocurate.toml"
ENV_PREFIX = "HISTOCURATE_"
_ENV_NOT_CONFIG = {"HISTOCURATE_WORKSPACE"}  # read by the CLI to find the workspace itself

# TCGA study codes: the indications a manifest may name unless the config lists others.
TCGA_INDICATIONS: tuple[str, ...] = (
    "ACC", "BLCA", "BRCA", "CESC", "CHOL", "COAD", "DLBC", "ESCA", "GBM", "HNSC", "KICH",
    "KIRC", "KIRP", "LAML", "LGG", "LIHC", "LUAD", "LUSC", "MESO", "OV", "PAAD", "PCPG",
    "PRAD", "READ", "SARC", "SKCM", "STAD", "TGCT", "THCA", "THYM", "UCEC", "UCS", "UVM",
)  # fmt: skip


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class TilingConfig(Section):
    """Tissue detection and the tile grid."""

    tile_size_um: float = Field(112.0, gt=0, description="Tile side in micrometres.")
    target_mpp: float | None = Field(
        None,
        gt=0,
        description="Resolution of tiles as read (um/px). None: the standard resolution "
        "(0.25 or 0.5) nearest the slide's own.",
    )
    tissue_threshold: float = Field(
        0.5, ge=0, le=1, description="Keep tiles whose tissue fraction is at least this."
    )
    thumbnail_mpp: float = Field(
        8.0, gt=0, description="Resolution of the thumbnail tissue is detected on (um/px)."
    )


class SynthConfig(Section):
    """The built-in synthetic cohort (`histocurate synth`)."""

    indications: list[str] = Field(
        default_factory=lambda: ["LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"]
    )
    slides_per_indication: int = Field(2, ge=1)
    width_px: int = Field(4096, ge=512)
    height_px: int = Field(4096, ge=512)
    mpp: float = Field(0.25, gt=0)
    seed: int = 0


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


SelectionArm = Literal["diversity", "rare", "uncertainty"]
ScalerName = Literal["global", "slide", "cohort"]
_ARMS: tuple[SelectionArm, ...] = ("diversity", "rare", "uncertainty")
_SCALERS: tuple[ScalerName, ...] = ("global", "slide", "cohort")


class SelectionConfig(Section):
    """Active-learning tile selection (`histocurate select`): the three arms and the draws."""

    arms: list[SelectionArm] = Field(
        default_factory=lambda: list(_ARMS),
        description="Arms to run: diversity, rare (rare-cell enrichment), uncertainty.",
    )
    encoders: list[str] = Field(
        default_factory=list,
        description="Feature sets for the presence models (1 or 2 encoders; the first also "
        "drives K-means). Empty: every encoder with features, at most two.",
    )
    labels: Path | None = Field(
        None,
        description="Annotations table (Parquet/CSV with tile_id, label) giving tile presence "
        "labels. None: consensus, then points, then the synthetic truth, whichever exists.",
    )
    rare_types: list[str] = Field(
        default_factory=lambda: list(RARE_LABELS),
        description="Types of the rare-cell enrichment arm (histocurate.labels ids).",
    )
    n_tiles: int = Field(50, ge=1, description="N0: tiles drawn from the diversity + rare pool.")
    n_uncertain: int = Field(50, ge=0, description="Tiles drawn from the uncertainty pool.")
    kmeans_clusters: int = Field(20, ge=1, description="K of the per-slide diversity K-means.")
    top_per_slide: int = Field(2, ge=1, description="Rare arm: best tiles kept per slide and type.")
    hidden_sizes: list[list[int]] = Field(
        default_factory=lambda: [[32], [32, 16]],
        description="Hidden layers of the MLP candidates (one entry per depth).",
    )
    scalers: list[ScalerName] = Field(
        default_factory=lambda: list(_SCALERS),
        min_length=1,
        description="Z-scoring candidates: fitted globally, per slide, per cohort.",
    )
    ensemble_members: int = Field(5, ge=2, description="Members of each final presence model.")
    epochs: int = Field(20, ge=1, description="Training epochs of each MLP.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate of the MLPs.")
    outer_folds: int = Field(3, ge=2, description="Outer folds of the nested CV (assessment).")
    inner_folds: int = Field(3, ge=2, description="Inner folds of the nested CV (model choice).")
    prob_threshold: float = Field(
        0.4, ge=0, le=1, description="Uncertainty arm: tiles need mean P(presence) above this."
    )
    bald_percentile: float = Field(
        90.0, ge=0, le=100, description="Uncertainty arm: BALD above this percentile of the slide."
    )
    uncertainty_clusters: tuple[int, int] = Field(
        (5, 20), description="Min and max per-slide K-means clusters of uncertain tiles."
    )
    weight_clip: tuple[float, float] = Field(
        (0.5, 2.0), description="Slide weights of the uncertainty draw clipped to these x mean."
    )
    mosaic: bool = Field(True, description="Draw the mosaic image of the selected tiles.")
    seed: int = Field(0, description="Seed of every random choice of the selection.")

    @field_validator("hidden_sizes")
    @classmethod
    def _layers(cls, value: list[list[int]]) -> list[list[int]]:
        if not value or any(not layers or min(layers) < 1 for layers in value):
            raise ValueError("give at least one depth, each a non-empty list of sizes >= 1")
        return value

    @field_validator("uncertainty_clusters")
    @classmethod
    def _cluster_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1]:
            raise ValueError("needs 1 <= min <= max")
        return value

    @field_validator("weight_clip")
    @classmethod
    def _clip_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= 1 <= value[1]:
            raise ValueError("needs 0 < low <= 1 <= high (multiples of the mean weight)")
        return value


class SegmentConfig(Section):
    """Clicks to nucleus masks (`histocurate segment`)."""

    segmenter: Literal["auto", "nuclick", "watershed"] = Field(
        "auto",
        description="'nuclick' (needs checkpoint), 'watershed' (classical, no weights), or "
        "'auto': nuclick when a checkpoint is set, else watershed.",
    )
    checkpoint: Path | None = Field(
        None, description="NuClick weights (ours or the public PyTorch layout), workspace-relative."
    )
    device: str = Field("auto", description="Torch device for NuClick ('auto': cuda if present).")
    batch_size: int = Field(64, ge=1, description="NuClick patches per forward pass.")
    threshold: float = Field(0.5, gt=0, lt=1, description="NuClick probability threshold.")
    tiles_per_batch: int = Field(
        16, ge=1, description="Tiles whose clicks share NuClick batches (and one Prefect task)."
    )
    overlays: int = Field(12, ge=0, description="Overlay PNGs for at most this many tiles.")


class ConsensusConfig(Section):
    """Multi-annotator consensus (`histocurate consensus`)."""

    iou_threshold: float = Field(
        0.4, ge=0, lt=1, description="Masks of two annotators match when IoU exceeds this."
    )
    min_annotators: int = Field(
        2, ge=1, description="Keep nuclei found by at least this many annotators."
    )
    label_rule: Literal["majority", "dawid-skene"] = Field(
        "majority", description="Rule for the label column (both are always reported)."
    )
    resegment: bool = Field(
        True, description="Re-segment the consensus centroids with the configured segmenter."
    )
    geojson: bool = Field(True, description="Write a QuPath GeoJSON file per tile.")
    overlays: int = Field(
        25, ge=0, description="Overlay PNGs for at most this many tiles (0: none)."
    )
    shard_tiles: int = Field(64, ge=1, description="Tiles per task in the Prefect flow.")


class EvaluateConfig(Section):
    """Evaluation of predictions against a truth (`histocurate evaluate`)."""

    iou_threshold: float = Field(
        0.5, ge=0, lt=1, description="A pair of nuclei counts when its IoU exceeds this."
    )
    match_radius_px: float = Field(
        12.0, gt=0, description="Point matching only: max centroid distance (6 at 20x)."
    )
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples of tiles (0: none).")
    seed: int = Field(0, description="Seed of the bootstrap resamples.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the intervals.")
    multilabel: Literal["each", "split"] = Field(
        "each", description="A miss on a nucleus with several labels: FN for each, or 1/|S|."
    )
    aggregate: Literal["pooled", "tile_mean"] = Field(
        "pooled", description="DQ/SQ/PQ from counts pooled over tiles, or mean of tiles."
    )


class CytomineConfig(Section):
    """Cytomine campaigns (`histocurate export` / `import`). Never holds a key: keys come
    from CYTOMINE_PUBLIC_KEY / CYTOMINE_PRIVATE_KEY or the Prefect Secret blocks named here."""

    host: str | None = Field(None, description="Server URL (CYTOMINE_HOST overrides it).")
    project: str | None = Field(None, description="Project name of the campaign.")
    annotators: list[str] = Field(
        default_factory=list, description="Usernames of the annotators (existing users)."
    )
    k_per_tile: int | None = Field(
        None, ge=1, description="Validation sets: annotators per tile (paper: 3 of 9). None: all."
    )
    seed: int = Field(0, description="Seed of the per-tile draw of annotators.")
    public_key_block: str | None = Field(None, description="Prefect Secret block: public key.")
    private_key_block: str | None = Field(None, description="Prefect Secret block: private key.")
    timeout_s: float = Field(30.0, gt=0, description="Read timeout of one request.")
    connect_deadline_s: float = Field(
        20.0, gt=0, description="How long to wait for /server/ping before giving up."
    )
    retries: int = Field(6, ge=1, description="Attempts per call (transport errors, 5xx only).")


class HistocurateConfig(Section):
    """Everything a stage may read. One instance per run, passed down explicitly."""

    workspace: Path = Field(Path("."), description="Root of the workspace (set by the loader).")
    cohort: CohortConfig = Field(default_factory=CohortConfig)  # type: ignore[arg-type]
    tiling: TilingConfig = Field(default_factory=TilingConfig)  # type: ignore[arg-type]
    synth: SynthConfig = Field(default_factory=SynthConfig)  # type: ignore[arg-type]
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)  # type: ignore[arg-type]
    selection: SelectionConfig = Field(default_factory=SelectionConfig)  # type: ignore[arg-type]
    segment: SegmentConfig = Field(default_factory=SegmentConfig)  # type: ignore[arg-type]
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)  # type: ignore[arg-type]
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)  # type: ignore[arg-type]
    cytomine: CytomineConfig = Field(default_factory=CytomineConfig)  # type: ignore[arg-type]

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def resolve(self, path: Path | str) -> Path:
        """A path from the config, made absolute against the workspace root."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.workspace / path


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings from ``HISTOCURATE_SECTION__KEY`` variables (JSON values allowed)."""
    found: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_CONFIG:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        try:
            value: Any = json.loads(raw) if raw[:1] in "[{" else raw
        except json.JSONDecodeError:
            value = raw
        node = found
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return found


def _describe(error: ValidationError, sources: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  unknown key {where!r}")
        else:
            lines.append(f"  {where}: {item['msg']}")
    return f"invalid configuration ({sources}):\n" + "\n".join(lines)


def load_config(
    workspace: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    require_file: bool = True,
) -> HistocurateConfig:
    """Read the configuration of ``workspace``: file < environment < ``overrides``.

    ``overrides`` is nested like the file (``{"tiling": {"tissue_threshold": 0.3}}``).

    >>> import tempfile
    >>> cfg = load_config(tempfile.mkdtemp(), {"tiling": {"tile_size_um": 56}},
    ...                   environ={}, require_file=False)
    >>> cfg.tiling.tile_size_um
    56.0
    """
    root = Path(workspace).expanduser().resolve()
    path = root / CONFIG_FILE
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise WorkspaceError(f"{path}: not valid TOML ({exc})") from None
    elif require_file:
        raise WorkspaceError(
            f"{root} is not a histocurate workspace (no {CONFIG_FILE}); "
            f"create one with `histocurate init {root}`"
        )
    env = config_from_environment(os.environ if environ is None else environ)
    merged = _deep_merge(_deep_merge(data, env), overrides or {})
    merged["workspace"] = root
    try:
        return HistocurateConfig.model_validate(merged)
    except ValidationError as exc:
        raise WorkspaceError(_describe(exc, f"{path}, {ENV_PREFIX}* variables, flags")) from None


def render_toml(config: HistocurateConfig) -> str:
    """The configuration as a ``histocurate.toml`` text (without the workspace path)."""
    lines = ["# histocurate workspace configuration; see `histocurate --help`.", ""]
    dumped = config.model_dump(mode="json", exclude={"workspace"}, exclude_none=True)
    for section, values in dumped.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
