"""The extraction loop and the feature files, without slides (a fake tile reader).

Checks: workers and no workers give the same vectors; a tile that cannot be read or an
encoder that returns NaN fails that slide only, with the tile named; resuming skips done
slides; files follow the schema and `load_features` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from data_schema import features_schema
from histocurate.errors import SchemaError, UserInputError
from histocurate.features import (
    FeatureMatrix,
    NonFiniteFeaturesError,
    embed_tile_table,
    get_encoder,
    load_features,
    write_slide_features,
)
from histocurate.features.base import Encoder, Preprocessor, ResizeToTensor
from histocurate.features.store import prepare_output


def fake_read(row: Mapping[str, Any]) -> np.ndarray:
    """A deterministic tile per position; tiles named '*corrupt*' cannot be read."""
    if "corrupt" in str(row["tile_id"]):
        raise OSError("JPEG decode failed in this region")
    rng = np.random.default_rng(int(row["x"]) * 1000 + int(row["y"]))
    tile = np.full((int(row["tile_px"]),) * 2 + (3,), (230, 170, 210), np.uint8)
    yy, xx = np.mgrid[: tile.shape[0], : tile.shape[1]]
    for cy, cx in rng.integers(0, tile.shape[0], (int(rng.integers(1, 30)), 2)):
        tile[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = (80, 40, 140)
    return tile


def make_tiles(slides: dict[str, int], *, corrupt: str | None = None) -> pd.DataFrame:
    rows = []
    for slide, n in slides.items():
        for i in range(n):
            tile_id = f"{slide}_x{i * 448}_y0" + ("_corrupt" if slide == corrupt and i == 1 else "")
            rows.append(
                {
                    "tile_id": tile_id,
                    "slide_id": slide,
                    "slide_path": f"/nowhere/{slide}.tiff",
                    "x": i * 448 + len(slide),
                    "y": 0,
                    "read_level": 0,
                    "read_size": 448,
                    "tile_px": 448,
                }
            )
    return pd.DataFrame(rows)


class NaNEncoder(Encoder):
    """Returns NaN for the third tile it sees."""

    def __init__(self) -> None:
        self.name, self.dim, self.input_px, self.seen = "nan-test", 4, 16, 0

    def preprocessor(self) -> Preprocessor:
        return ResizeToTensor(16)

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        out = batch.float().mean(dim=(2, 3)).repeat(1, 2)[:, :4].numpy()
        for k in range(len(out)):
            self.seen += 1
            if self.seen == 3:
                out[k, 0] = np.nan
        return out.astype(np.float32)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}


def test_workers_equal_no_workers_and_files_roundtrip(tmp_path: Path) -> None:
    tiles = make_tiles({"s1": 5, "s2": 0, "s3": 7})
    encoder = get_encoder("builtin")
    kwargs: dict[str, Any] = {"batch_size": 4, "reader": fake_read}
    seen: list[int] = []
    a = embed_tile_table(
        tiles,
        encoder,
        tmp_path / "a",
        num_workers=0,
        slide_ids=["s1", "s2", "s3"],
        progress=seen.append,
        **kwargs,
    )
    b = embed_tile_table(tiles, encoder, tmp_path / "b", num_workers=2, **kwargs)
    assert [(o.item, o.status, o.count) for o in a] == [
        ("s2", "done", 0),  # no tiles: an empty file marks it done
        ("s1", "done", 5),
        ("s3", "done", 7),
    ]
    assert sum(seen) == 12 and {o.status for o in b} == {"done"}
    fa, fb = load_features(tmp_path / "a", "builtin"), load_features(tmp_path / "b", "builtin")
    assert isinstance(fa, FeatureMatrix) and fa.values.dtype == np.float32
    assert fa.values.shape == (12, encoder.dim) and fa.encoder == "builtin"
    np.testing.assert_array_equal(fa.values, fb.values)
    assert list(fa.tile_ids) == list(tiles.tile_id) and set(fa.slide_ids) == {"s1", "s3"}
    np.testing.assert_array_equal(fa.values[0], encoder.embed_tiles([fake_read(tiles.iloc[0])])[0])
    only = load_features(tmp_path / "a", "builtin", slide_ids=["s3"])
    assert len(only) == 7 and set(only.slide_ids) == {"s3"} and only.subset(only.values[:, 0] > -1)
    schema = pq.read_schema(tmp_path / "a" / "s1.parquet")
    assert schema.field("features").type == pa.list_(pa.float32(), encoder.dim)
    assert pq.read_table(tmp_path / "a" / "s1.parquet").column("encoder")[0].as_py() == "builtin"


def test_unreadable_tile_fails_its_slide_only_and_resume(tmp_path: Path) -> None:
    tiles = make_tiles({"good": 3, "bad": 4, "later": 2}, corrupt="bad")
    encoder = get_encoder("builtin")
    out = tmp_path / "f"
    first = {o.item: o for o in embed_tile_table(tiles, encoder, out, reader=fake_read)}
    assert first["good"].status == first["later"].status == "done"
    assert first["bad"].status == "failed"
    assert "bad_x448_y0_corrupt" in first["bad"].error and "JPEG decode" in first["bad"].error
    assert not (out / "bad.parquet").exists()
    again = {o.item: o.status for o in embed_tile_table(tiles, encoder, out, reader=fake_read)}
    assert again == {"good": "skipped", "bad": "failed", "later": "skipped"}


def test_nan_features_fail_the_slide_naming_the_tile(tmp_path: Path) -> None:
    tiles = make_tiles({"a": 2, "b": 3})
    outcomes = embed_tile_table(tiles, NaNEncoder(), tmp_path, batch_size=2, reader=fake_read)
    status = {o.item: o for o in outcomes}
    assert status["a"].status == "done"
    assert status["b"].status == "failed" and "b_x0_y0" in status["b"].error
    assert "NaN" in status["b"].error
    with pytest.raises(NonFiniteFeaturesError, match="t2"):
        write_slide_features(
            tmp_path, "z", "x", ["t1", "t2"], np.array([[0.0], [np.inf]], np.float32)
        )


def test_load_features_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="histocurate embed --encoder builtin"):
        load_features(tmp_path, "builtin")
    write_slide_features(tmp_path, "s1", "builtin", ["t"], np.ones((1, 3), np.float32))
    with pytest.raises(UserInputError, match=r"\['s9'\]"):
        load_features(tmp_path, "builtin", slide_ids=["s9"])
    with pytest.raises(SchemaError, match="expected 'phikon'"):
        load_features(tmp_path, "phikon")
    timm = tmp_path / "ws" / "features" / "timm_test_vit"
    write_slide_features(timm, "s1", "timm:test_vit", ["t"], np.ones((1, 2), np.float32))
    for name in ("timm:test_vit", "timm_test_vit"):  # name or folder name
        assert load_features(tmp_path / "ws", name).encoder == "timm:test_vit"
    table = pa.table({"tile_id": ["t"], "slide_id": ["s2"], "features": [[1.0]]})
    pq.write_table(table, tmp_path / "s2.parquet")
    with pytest.raises(SchemaError, match=r"s2\.parquet"):
        load_features(tmp_path, "builtin", slide_ids=["s2"])
    assert features_schema(3).to_arrow().field("features").type.list_size == 3


def test_manifest_refuses_other_encoder_configuration(tmp_path: Path) -> None:
    prepare_output(tmp_path, {"name": "phikon", "sha256": "aaa", "weights_path": "/x"}, force=False)
    write_slide_features(tmp_path, "s1", "phikon", ["t"], np.ones((1, 2), np.float32))
    # Same weights elsewhere: fine. Other weights: refused unless forced.
    prepare_output(tmp_path, {"name": "phikon", "sha256": "aaa", "weights_path": "/y"}, force=False)
    with pytest.raises(UserInputError, match="sha256"):
        prepare_output(tmp_path, {"name": "phikon", "sha256": "bbb"}, force=False)
    prepare_output(tmp_path, {"name": "phikon", "sha256": "bbb"}, force=True)
