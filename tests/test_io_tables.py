"""Schema-checked, atomic Parquet tables."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_schema import SLIDES, TILES
from data_schema._table import SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY
from histocurate.errors import SchemaError
from histocurate.io import (
    list_partitions,
    provenance_token,
    read_provenance,
    read_table,
    write_partition,
    write_table,
)


def slides_frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": [f"s{i}" for i in range(n)],
            "path": [f"/data/s{i}.svs" for i in range(n)],
            "indication": "LUAD",
            "cohort": "c1",
            "mpp_override": [None] * n,
        }
    )


def test_round_trip_keeps_values_and_stamps_schema(tmp_path: Path) -> None:
    path = write_table(slides_frame(), tmp_path / "slides.parquet", SLIDES)
    back = read_table(path, SLIDES)
    assert back["slide_id"].tolist() == ["s0", "s1", "s2"]
    assert back["mpp_override"].isna().all()
    meta = pq.read_schema(path).metadata
    assert meta[b"histocurate.schema"] == b"slides"
    assert meta[b"histocurate.schema_version"] == str(SLIDES.version).encode()


def test_provenance_is_kept_beside_the_stamp_and_read_alone(tmp_path: Path) -> None:
    path = write_table(slides_frame(), tmp_path / "s.parquet", SLIDES,
                       provenance={"slide": "12:ab", "tiling": "x"})  # fmt: skip
    assert read_provenance(path) == {"slide": "12:ab", "tiling": "x"}
    plain = write_table(slides_frame(), tmp_path / "plain.parquet", SLIDES)
    assert read_provenance(plain) == {}
    # the stamp is still checked and the rows are those of a plain write
    pd.testing.assert_frame_equal(read_table(path, SLIDES), read_table(plain, SLIDES))
    meta = pq.read_schema(path).metadata
    assert meta[SCHEMA_NAME_KEY] == b"slides" and SCHEMA_VERSION_KEY in meta
    (tmp_path / "junk.parquet").write_text("not parquet")
    assert read_provenance(tmp_path / "junk.parquet") == {}
    assert read_provenance(tmp_path / "missing.parquet") == {}
    token = provenance_token({"a": "1", "b": "2"})
    assert token == provenance_token({"b": "2", "a": "1"}) != provenance_token({"a": "1"})


def test_writer_names_missing_and_unexpected_columns(tmp_path: Path) -> None:
    frame = slides_frame().drop(columns=["cohort"]).assign(cohrt="x")
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['cohort'\].*unexpected.*cohrt"):
        write_table(frame, tmp_path / "s.parquet", SLIDES)
    assert not (tmp_path / "s.parquet").exists()


def test_writer_names_column_with_wrong_type(tmp_path: Path) -> None:
    frame = slides_frame().assign(mpp_override=["a", "b", "c"])
    with pytest.raises(SchemaError, match="column 'mpp_override' cannot be stored as double"):
        write_table(frame, tmp_path / "s.parquet", SLIDES)


def test_writer_refuses_nulls_where_not_allowed(tmp_path: Path) -> None:
    frame = slides_frame().astype({"cohort": object})
    frame.loc[1, "cohort"] = None
    with pytest.raises(SchemaError, match="'cohort' has 1 missing value"):
        write_table(frame, tmp_path / "s.parquet", SLIDES)


def test_reader_names_file_column_and_expected_type(tmp_path: Path) -> None:
    path = tmp_path / "slides.parquet"
    table = pa.table({"slide_id": ["a"], "path": ["p"], "indication": ["LUAD"], "cohort": [3]})
    fields = [pa.field(n, t) for n, t in zip(table.column_names, table.schema.types, strict=True)]
    fields.append(pa.field("mpp_override", pa.float64()))
    schema = pa.schema(fields, metadata=SLIDES.to_arrow().metadata)
    pq.write_table(
        table.append_column("mpp_override", pa.array([None], pa.float64())).cast(schema), path
    )
    with pytest.raises(SchemaError) as info:
        read_table(path, SLIDES)
    message = str(info.value)
    assert str(path) in message and "'cohort'" in message and "expected string" in message


def test_reader_refuses_other_version_other_table_and_foreign_files(tmp_path: Path) -> None:
    path = write_table(slides_frame(), tmp_path / "slides.parquet", SLIDES)
    with pytest.raises(SchemaError, match=r"expected table 'tiles'.*'slides' table"):
        read_table(path, TILES)
    old = pq.read_table(path)
    meta = dict(old.schema.metadata)
    meta[b"histocurate.schema_version"] = b"0"
    pq.write_table(old.replace_schema_metadata(meta), tmp_path / "old.parquet")
    with pytest.raises(SchemaError, match="schema version 0"):
        read_table(tmp_path / "old.parquet", SLIDES)
    # the advice names the command that writes the table again
    (tmp_path / "ws").mkdir()
    pq.write_table(old.replace_schema_metadata(meta), tmp_path / "ws" / "slides.parquet")
    with pytest.raises(SchemaError, match=r"re-run `histocurate tile --force`"):
        read_table(tmp_path / "ws" / "slides.parquet", SLIDES)
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(SchemaError, match="no schema stamp"):
        read_table(tmp_path / "foreign.parquet", SLIDES)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        read_table(tmp_path / "text.parquet", SLIDES)


def _tiles(slide_id: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tile_id": [f"{slide_id}_x{i}_y0" for i in range(n)],
            "slide_id": slide_id,
            "indication": "LUAD",
            "cohort": "c",
            "slide_path": "/x.svs",
            "x": range(n),
            "y": 0,
            "size_level0": 448,
            "mpp": 0.25,
            "tile_mpp": 0.25,
            "tile_px": 448,
            "read_level": 0,
            "read_size": 448,
            "resized": False,
            "tissue_fraction": 1.0,
        }
    )


def test_partitions_are_listed_read_together_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "tiles.parquet"
    root.mkdir()
    assert read_table(root, TILES).empty
    write_partition(_tiles("a", 2), root, "a", TILES)
    write_partition(_tiles("b", 3), root, "b", TILES)
    assert list_partitions(root) == ["a", "b"]
    assert len(read_table(root, TILES)) == 5
    with pytest.raises(SchemaError, match="do not belong to partition 'c'"):
        write_partition(_tiles("b", 1), root, "c", TILES)
    with pytest.raises(SchemaError, match="cannot name a partition file"):
        write_partition(_tiles("../x", 1), root, "../x", TILES)


def test_missing_table_says_which_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist; run the stage"):
        read_table(tmp_path / "tiles.parquet", TILES)


def test_writer_killed_mid_write_leaves_previous_file_intact(tmp_path: Path) -> None:
    """A writer SIGKILLed after writing its temp file but before the rename changes nothing."""
    path = write_table(slides_frame(3), tmp_path / "slides.parquet", SLIDES)
    script = textwrap.dedent(
        f"""
        import sys, time
        import pandas as pd
        import pyarrow.parquet as pq
        import histocurate.io.tables as tables
        from data_schema import SLIDES
        real_write = pq.write_table
        def write_then_hang(table, where, **kwargs):
            real_write(table, where, **kwargs)
            print("temp written", flush=True)
            time.sleep(120)
        tables.pq.write_table = write_then_hang
        frame = pd.DataFrame({{"slide_id": ["new"], "path": ["p"], "indication": ["LUAD"],
                              "cohort": ["c"], "mpp_override": [None]}})
        tables.write_table(frame, {str(path)!r}, SLIDES)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "temp written"
    child.kill()
    child.wait(timeout=30)
    assert read_table(path, SLIDES)["slide_id"].tolist() == ["s0", "s1", "s2"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the killed writer's temp file should be the only trace"
    # The next write succeeds and readers of partition folders ignore temp files.
    write_table(slides_frame(1), path, SLIDES)
    assert read_table(path, SLIDES)["slide_id"].tolist() == ["s0"]
