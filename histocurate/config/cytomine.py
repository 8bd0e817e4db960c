"""[cytomine]: Cytomine campaigns (`histocurate export` / `import`)."""

from __future__ import annotations

from pydantic import Field

from histocurate.config.base import Section


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
