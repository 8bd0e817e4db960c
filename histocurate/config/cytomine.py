"""[cytomine]: Cytomine campaigns (`histocurate export` / `import` / `push-consensus`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histocurate.config.base import Section

Isolation = Literal["shared", "per-reader"]
ReviewedMode = Literal["exclude", "include", "only"]
LabelBy = Literal["creator", "reviewer"]
PolygonMode = Literal["reject", "centroid"]
PushShape = Literal["polygons", "points"]


class CytomineConfig(Section):
    """Cytomine campaigns. Never holds a key: keys come from CYTOMINE_PUBLIC_KEY /
    CYTOMINE_PRIVATE_KEY (CYTOMINE_CONSENSUS_* for the consensus layer) or the Prefect Secret
    blocks named here."""

    host: str | None = Field(None, description="Server URL (CYTOMINE_HOST overrides it).")
    project: str | None = Field(None, description="Project name of the campaign.")
    annotators: list[str] = Field(
        default_factory=list, description="Usernames of the annotators (existing users)."
    )
    k_per_tile: int | None = Field(
        None, ge=1, description="Validation sets: annotators per tile (paper: 3 of 9). None: all."
    )
    seed: int = Field(0, description="Seed of the per-tile draw of annotators.")
    isolation: Isolation = Field(
        "shared",
        description="shared: one project, each reader sees only their own layer; per-reader: "
        "one project per reader holding only their tiles (the server enforces the assignment).",
    )
    upload_url: str | None = Field(
        None, description="Where PIMS takes uploads (default: {host}/ims/upload, else /upload)."
    )
    storage: int | None = Field(None, description="Storage id to upload to (default: your own).")
    public_key_block: str | None = Field(None, description="Prefect Secret block: public key.")
    private_key_block: str | None = Field(None, description="Prefect Secret block: private key.")
    timeout_s: float = Field(30.0, gt=0, description="Read timeout of one request.")
    connect_deadline_s: float = Field(
        20.0, gt=0, description="How long to wait for /server/ping before giving up."
    )
    retries: int = Field(6, ge=1, description="Attempts per call (transport errors, 5xx only).")
    backoff_s: float = Field(
        0.5, ge=0, description="First wait before a retry (doubles, at most 8 s)."
    )
    upload_wait_s: float = Field(
        300.0, gt=0, description="How long PIMS may take to import one uploaded tile."
    )
    reviewed: ReviewedMode = Field(
        "exclude",
        description="Import: reviewed annotations left out, included (a review replaces the "
        "annotation it reviews), or only them.",
    )
    label_by: LabelBy = Field(
        "creator",
        description="Import: when another user added a term (a relabel), keep the creator's "
        "own term or the reviewer's.",
    )
    polygons: PolygonMode = Field(
        "reject", description="Import: polygons rejected (not_a_point) or taken as centroid."
    )
    keep_unassigned: bool = Field(
        False,
        description="Import: keep points by users not assigned the tile (open campaigns); by "
        "default they go to import_rejects as not_assigned.",
    )
    consensus_public_key_block: str | None = Field(
        None, description="Prefect Secret block: public key of the consensus layer's user."
    )
    consensus_private_key_block: str | None = Field(
        None, description="Prefect Secret block: private key of the consensus layer's user."
    )
    push_as: PushShape = Field(
        "polygons", description="push-consensus: nuclei as polygons or as points."
    )
