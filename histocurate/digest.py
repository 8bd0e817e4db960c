"""The one digest of the project: short, stable tokens of text, bytes, files and JSON values.

>>> short_digest("abc")
'ba7816bf8f01cfea'
>>> json_digest({"b": 1, "a": [2, 3]}) == json_digest({"a": [2, 3], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def sha256_hex(data: bytes | str) -> str:
    """Full sha256 of bytes (or UTF-8 text), hexadecimal."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Full sha256 of a file's bytes, hexadecimal, read in ``chunk``-byte pieces (a weight
    file of several GB never sits in memory whole).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     file_sha256(f.name) == sha256_hex("abc")
    True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(chunk):
            digest.update(piece)
    return digest.hexdigest()


def short_digest(data: bytes | str, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 (a token, not a security check)."""
    return sha256_hex(data)[:length]


def json_digest(value: Any, length: int = 16) -> str:
    """Digest of a JSON-serialisable value, independent of dict key order."""
    return short_digest(json.dumps(value, sort_keys=True, default=str), length)
