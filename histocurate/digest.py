"""The one digest of the project: short, stable tokens of text, bytes and JSON values.

>>> short_digest("abc")
'ba7816bf8f01cfea'
>>> json_digest({"b": 1, "a": [2, 3]}) == json_digest({"a": [2, 3], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha256_hex(data: bytes | str) -> str:
    """Full sha256 of bytes (or UTF-8 text), hexadecimal."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def short_digest(data: bytes | str, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 (a token, not a security check)."""
    return sha256_hex(data)[:length]


def json_digest(value: Any, length: int = 16) -> str:
    """Digest of a JSON-serialisable value, independent of dict key order."""
    return short_digest(json.dumps(value, sort_keys=True, default=str), length)
