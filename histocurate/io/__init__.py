"""File I/O shared by every stage: atomic writes and schema-checked Parquet tables."""

from histocurate.io.atomic import atomic_folder, atomic_path, atomic_write_bytes, atomic_write_text
from histocurate.io.tables import (
    Provenance,
    list_partitions,
    partition_path,
    provenance_token,
    read_partition,
    read_provenance,
    read_table,
    write_partition,
    write_table,
)

__all__ = [
    "Provenance",
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "list_partitions",
    "partition_path",
    "provenance_token",
    "read_partition",
    "read_provenance",
    "read_table",
    "write_partition",
    "write_table",
]
