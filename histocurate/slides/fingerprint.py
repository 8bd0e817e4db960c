"""A cheap fingerprint of a slide file: has it been replaced since we last read it?

Hashing a whole slide (gigabytes) on every resume is too slow, and modification times
change when files are copied. The size plus the first and last MiB is cheap and stable
under copies, and differs between two scans (headers hold the scan date, tiles differ).
For formats made of several files (MIRAX), this fingerprints the file the manifest names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


def file_fingerprint(path: str | os.PathLike[str], *, chunk: int = CHUNK) -> str:
    """``size:sha256(first chunk + last chunk)``; raises OSError when the file is unreadable.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"slide"); f.flush()
    ...     file_fingerprint(f.name).startswith("5:")
    True
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(chunk))
        if size > chunk:
            handle.seek(max(chunk, size - chunk))
            digest.update(handle.read(chunk))
    return f"{size}:{digest.hexdigest()[:32]}"
