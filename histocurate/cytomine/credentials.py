"""Cytomine host and API keys: from the environment or Prefect Secret blocks, never logged.

The keys live only in a `Credentials` object whose ``repr`` hides them, and are read at the
moment of use: the configuration file holds the host and the *names* of Secret blocks,
never a key. Order: explicit arguments > ``CYTOMINE_*`` variables > Secret blocks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from histocurate.errors import UserInputError

ENV_HOST = "CYTOMINE_HOST"
ENV_PUBLIC = "CYTOMINE_PUBLIC_KEY"
ENV_PRIVATE = "CYTOMINE_PRIVATE_KEY"
ENV_CONSENSUS_PUBLIC = "CYTOMINE_CONSENSUS_PUBLIC_KEY"  # the user whose layer holds consensus
ENV_CONSENSUS_PRIVATE = "CYTOMINE_CONSENSUS_PRIVATE_KEY"


class CredentialsError(UserInputError):
    """Keys or host are missing, or a Secret block cannot be read."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where Cytomine is and the keys to sign with. ``repr`` never shows a key."""

    host: str
    public_key: str = field(repr=False)
    private_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(host={self.host!r}, public_key='***', private_key='***')"

    __str__ = __repr__


def _secret(block_name: str) -> str:
    """The value of a Prefect ``Secret`` block (Prefect imported only here)."""
    try:
        from prefect.blocks.system import Secret

        block: Any = Secret.load(block_name)
        value = block.get()
    except Exception as exc:  # Prefect raises ValueError, httpx errors, ...
        raise CredentialsError(
            f"cannot read the Prefect Secret block {block_name!r} ({type(exc).__name__}); "
            f"create it (`prefect block register` / UI) or set {ENV_PUBLIC} and {ENV_PRIVATE}"
        ) from None
    return str(value)


def resolve_credentials(
    *,
    host: str | None = None,
    environ: Mapping[str, str] | None = None,
    public_key_block: str | None = None,
    private_key_block: str | None = None,
    env_public: str = ENV_PUBLIC,
    env_private: str = ENV_PRIVATE,
) -> Credentials:
    """Host from the argument or ``CYTOMINE_HOST``; keys from the environment (variables
    ``env_public`` / ``env_private``) or Secret blocks."""
    env = os.environ if environ is None else environ
    host = host or env.get(ENV_HOST)
    if not host:
        raise CredentialsError(
            f"no Cytomine host: set {ENV_HOST}, [cytomine] host in histocurate.toml or --host"
        )
    public = env.get(env_public) or (_secret(public_key_block) if public_key_block else None)
    private = env.get(env_private) or (_secret(private_key_block) if private_key_block else None)
    if not public or not private:
        missing = [n for n, v in ((env_public, public), (env_private, private)) if not v]
        blocks = "consensus_" if env_public == ENV_CONSENSUS_PUBLIC else ""
        raise CredentialsError(
            f"no Cytomine keys: set {' and '.join(missing)} (or [cytomine] {blocks}"
            f"public_key_block / {blocks}private_key_block naming Prefect Secret blocks)"
        )
    return Credentials(host=host, public_key=public, private_key=private)


def scrub(text: str, credentials: Credentials | None) -> str:
    """``text`` with both keys replaced by ``***`` (for messages built from foreign text)."""
    if credentials is None:
        return text
    for secret in (credentials.private_key, credentials.public_key):
        if secret:
            text = text.replace(secret, "***")
    return text
