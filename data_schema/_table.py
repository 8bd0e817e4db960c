"""`TableSchema`: the declaration of one table (columns, Arrow types, version).

A declaration is the single source of truth for a table: writers cast to it and stamp
its name and version into the Parquet metadata; readers check the stamp, the columns and
their types, and name the file, column and expected type when something is off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

SCHEMA_NAME_KEY = b"histocurate.schema"
SCHEMA_VERSION_KEY = b"histocurate.schema_version"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, Arrow type, whether nulls are allowed, and what it means.

    ``choices`` makes it an enumerated column (an arm, a status, a reason): writes check
    that every value is one of them, so a typo in a stage never reaches a table.
    """

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False
    choices: tuple[str, ...] | None = None  # an enumerated column: the values it may hold


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A versioned table declaration.

    Bump ``version`` whenever a column is added, removed or changes type: files written
    under another version are then refused with a message saying so, rather than read
    wrongly.
    """

    name: str
    version: int
    doc: str
    columns: tuple[Column, ...]
    partition_by: str | None = None  # column whose value names the per-partition file
    metadata: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def choices(self, name: str) -> tuple[str, ...]:
        """The values enumerated column ``name`` may hold."""
        found = self.column(name).choices
        if found is None:
            raise KeyError(f"column {name!r} of table {self.name!r} is not enumerated")
        return found

    def to_arrow(self) -> pa.Schema:
        """The Arrow schema, stamped with this declaration's name and version."""
        fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns]
        meta = {SCHEMA_NAME_KEY: self.name.encode(), SCHEMA_VERSION_KEY: str(self.version).encode()}
        return pa.schema(fields, metadata=meta)
