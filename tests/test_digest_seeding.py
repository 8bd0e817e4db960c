"""One digest of files and one seeding helper: the callers give what they gave before."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np

from histocurate.cytomine.assignments import draw_annotators
from histocurate.digest import file_sha256
from histocurate.features.weights import fingerprint


def test_file_sha256_streams_the_whole_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * 1000 + 17)
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    assert file_sha256(path, chunk=1000) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == fingerprint(path)


def test_checkpoint_digest_is_the_file_sha256(tmp_path: Path) -> None:
    from histocurate.predict.models import checkpoint_digest

    path = tmp_path / "model.pt"
    path.write_bytes(b"not really a checkpoint")
    assert checkpoint_digest(path) == file_sha256(path)[:32]


def test_annotator_draws_are_those_of_before() -> None:
    pool = [f"p{i}" for i in range(7)]
    for seed in (0, 1, 12345, 2**32 - 1):
        for tile in ("t1", "s0_x448_y896", "tuile-é"):
            old = np.random.default_rng([seed, zlib.crc32(tile.encode())])
            expected = [pool[i] for i in sorted(old.choice(len(pool), size=3, replace=False))]
            assert draw_annotators(tile, pool, 3, seed=seed) == expected
