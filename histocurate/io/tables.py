"""Schema-checked Parquet tables, written atomically, optionally one file per partition.

A *table* is either one Parquet file or, when its schema has ``partition_by``, a folder
holding one Parquet file per partition key (``tiles.parquet/<slide_id>.parquet``). Per-slide
files let a stage resume (a slide whose file exists is done) and fan out (each worker
writes its own file, no shared writer).

A file may carry a *provenance*: string pairs saying what it was made from (a slide's
fingerprint, the settings), kept in the Parquet metadata beside the schema stamp. A stage
that resumes compares it with what it would make now, so a slide replaced under the same
id, or changed settings, redo the slide instead of keeping a stale file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_schema._table import SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY, TableSchema
from histocurate.errors import SchemaError
from histocurate.io.atomic import atomic_path

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROVENANCE_KEY = b"histocurate.provenance"

Provenance = Mapping[str, str]


def to_arrow(data: pd.DataFrame | pa.Table, schema: TableSchema, *, origin: str) -> pa.Table:
    """Cast ``data`` to ``schema``; raise `SchemaError` naming the column that does not fit.

    ``origin`` names where the data goes or comes from (a path) for the message.
    """
    names = data.column_names if isinstance(data, pa.Table) else list(map(str, data.columns))
    missing = [c for c in schema.column_names if c not in names]
    extra = [c for c in names if c not in schema.column_names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        raise SchemaError(
            f"{origin}: {' and '.join(parts)} for table {schema.name!r} v{schema.version} "
            f"(expected columns: {schema.column_names})"
        )
    arrays = []
    for col in schema.columns:
        values = data.column(col.name) if isinstance(data, pa.Table) else data[col.name]
        try:
            if isinstance(values, pa.ChunkedArray):
                array = values.cast(col.type)
            else:
                array = pa.array(values, type=col.type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as exc:
            raise SchemaError(
                f"{origin}: column {col.name!r} cannot be stored as {col.type} "
                f"(table {schema.name!r} v{schema.version}): {exc}"
            ) from None
        if not col.nullable and array.null_count:
            raise SchemaError(
                f"{origin}: column {col.name!r} has {array.null_count} missing value(s) but "
                f"table {schema.name!r} does not allow nulls there"
            )
        if col.choices is not None:
            _check_choices(array, col.name, col.choices, schema, origin)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema.to_arrow())


def _check_choices(
    array: pa.Array | pa.ChunkedArray,
    name: str,
    choices: tuple[str, ...],
    schema: TableSchema,
    origin: str,
) -> None:
    values = array.type.value_type if pa.types.is_list(array.type) else None
    flat = pc.list_flatten(array) if values is not None else array
    found = pc.unique(flat.drop_null()).to_pylist()
    bad = sorted(str(v) for v in found if v not in choices)
    if bad:
        raise SchemaError(
            f"{origin}: column {name!r} of table {schema.name!r} holds {bad[:5]}; its values "
            f"must be one of {list(choices)}"
        )


def _rerun_advice(origin: str) -> str:
    from histocurate.stages import writer_of

    writer = writer_of(origin)
    if writer is None:
        return "re-run the stage that writes it (with --force)"
    force = " --force" if writer.command in ("tile", "embed", "segment", "consensus") else ""
    return f"re-run `histocurate {writer.command}{force}` to write it again"


def check_arrow_schema(found: pa.Schema, schema: TableSchema, *, origin: str) -> None:
    """Raise `SchemaError` unless ``found`` was written under ``schema`` (name, version, types)."""
    meta = found.metadata or {}
    name = meta.get(SCHEMA_NAME_KEY, b"").decode() or None
    version = meta.get(SCHEMA_VERSION_KEY, b"").decode() or None
    if name != schema.name:
        what = f"a {name!r} table" if name else "not a histocurate table (no schema stamp)"
        raise SchemaError(f"{origin}: expected table {schema.name!r} but the file is {what}")
    if version != str(schema.version):
        raise SchemaError(
            f"{origin}: table {schema.name!r} has schema version {version}, this histocurate "
            f"reads version {schema.version}; {_rerun_advice(origin)}"
        )
    for col in schema.columns:
        idx = found.get_field_index(col.name)
        if idx < 0:
            raise SchemaError(
                f"{origin}: missing column {col.name!r} (expected type {col.type}) in table "
                f"{schema.name!r} v{schema.version}"
            )
        if found.field(idx).type != col.type:
            raise SchemaError(
                f"{origin}: column {col.name!r} has type {found.field(idx).type}, expected "
                f"{col.type} (table {schema.name!r} v{schema.version})"
            )
    extra = [n for n in found.names if n not in schema.column_names]
    if extra:
        raise SchemaError(f"{origin}: unexpected column(s) {extra} in table {schema.name!r}")


def write_table(
    data: pd.DataFrame | pa.Table,
    path: str | os.PathLike[str],
    schema: TableSchema,
    *,
    provenance: Provenance | None = None,
) -> Path:
    """Validate ``data`` against ``schema`` and write it to ``path`` atomically (with
    ``provenance`` in its metadata when given)."""
    path = Path(path)
    table = to_arrow(data, schema, origin=str(path))
    if provenance:
        meta = dict(table.schema.metadata or {})
        meta[PROVENANCE_KEY] = json.dumps(dict(provenance), sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def _read_file(path: Path, schema: TableSchema, columns: list[str] | None) -> pa.Table:
    try:
        found = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from None
    check_arrow_schema(found, schema, origin=str(path))
    return pq.read_table(path, columns=columns)


def read_table(
    path: str | os.PathLike[str], schema: TableSchema, *, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read a table (one file or a partition folder), checking it against ``schema``.

    A partition folder with no partitions gives an empty frame with the schema's columns.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(
            f"{path}: table {schema.name!r} does not exist; run the stage that writes it"
        )
    if path.is_dir():
        tables = [_read_file(p, schema, columns) for p in _partition_files(path)]
        if not tables:
            empty = schema.to_arrow()
            if columns is not None:
                empty = pa.schema([empty.field(c) for c in columns], metadata=empty.metadata)
            return empty.empty_table().to_pandas()
        return pa.concat_tables(tables).to_pandas()
    return _read_file(path, schema, columns).to_pandas()


def _partition_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.parquet") if not p.name.startswith("."))


def check_partition_key(key: str) -> str:
    """Return ``key`` if it is safe as a file name; raise `SchemaError` otherwise."""
    if not _SAFE_KEY.match(key):
        raise SchemaError(
            f"{key!r} cannot name a partition file: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    return key


def partition_path(root: str | os.PathLike[str], key: str) -> Path:
    """Path of the file holding partition ``key`` under ``root``."""
    return Path(root) / f"{check_partition_key(key)}.parquet"


def list_partitions(root: str | os.PathLike[str]) -> list[str]:
    """Keys of the partitions present under ``root`` (empty when ``root`` does not exist)."""
    root = Path(root)
    return [p.stem for p in _partition_files(root)] if root.is_dir() else []


def write_partition(
    data: pd.DataFrame | pa.Table,
    root: str | os.PathLike[str],
    key: str,
    schema: TableSchema,
    *,
    provenance: Provenance | None = None,
) -> Path:
    """Write one partition atomically; every row must belong to partition ``key``."""
    if schema.partition_by is None:
        raise ValueError(f"table {schema.name!r} is not partitioned")
    path = partition_path(root, key)
    values = (
        data.column(schema.partition_by).to_pylist()
        if isinstance(data, pa.Table)
        else list(data[schema.partition_by])
    )
    stray = {v for v in values if v != key}
    if stray:
        raise SchemaError(
            f"{path}: rows with {schema.partition_by}={sorted(map(str, stray))[:3]} do not belong "
            f"to partition {key!r}"
        )
    return write_table(data, path, schema, provenance=provenance)


def read_partition(
    root: str | os.PathLike[str], key: str, schema: TableSchema, *, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read one partition of a partitioned table."""
    return read_table(partition_path(root, key), schema, columns=columns)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """The provenance stored in a table file; empty when it has none or cannot be read
    (then it matches nothing, and a stage that resumes redoes the file)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        found = json.loads(meta.get(PROVENANCE_KEY, b"{}"))
    except (pa.ArrowInvalid, OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def provenance_token(provenance: Provenance) -> str:
    """A short digest of a provenance: what a downstream file records of its input."""
    from histocurate.digest import json_digest

    return json_digest(dict(provenance))
