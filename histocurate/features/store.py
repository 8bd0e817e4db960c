"""Feature files on disk: ``features/<encoder>/<slide>.parquet`` and ``_encoder.json``.

One file per slide (written atomically, so a file that exists is complete: resuming skips
it), schema ``features`` (tile_id, slide_id, encoder, fixed-size float32 vector). Beside the
files, ``_encoder.json`` records what made them (encoder, dimension, weights and their
sha256, options); a run with a different encoder identity refuses to mix its vectors in.

`load_features` is the reading side used by selection: stable, returns a `FeatureMatrix`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_schema import TableSchema, features_schema
from histocurate.errors import HistocurateError, SchemaError, UserInputError
from histocurate.io import (
    Provenance,
    atomic_write_text,
    list_partitions,
    partition_path,
    write_partition,
)
from histocurate.io.tables import check_arrow_schema
from histocurate.workspace import Workspace

MANIFEST = "_encoder.json"  # a leading underscore: Parquet readers of the folder skip it
_OLD_MANIFEST = "encoder.json"  # written by earlier versions; renamed when met
_NOT_COMPARED = frozenset({"weights_path"})  # the same weights moved elsewhere are the same


class NonFiniteFeaturesError(HistocurateError):
    """An encoder produced NaN or infinite values (a bug or numeric overflow, not input)."""


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    """Feature vectors of many tiles, row-aligned with their tile and slide ids."""

    tile_ids: np.ndarray  # (n,) str
    slide_ids: np.ndarray  # (n,) str
    values: np.ndarray  # (n, d) float32
    encoder: str

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def subset(self, rows: np.ndarray) -> FeatureMatrix:
        """Rows selected by a boolean mask or integer index."""
        return FeatureMatrix(
            self.tile_ids[rows], self.slide_ids[rows], self.values[rows], self.encoder
        )


def check_finite(values: np.ndarray, tile_ids: list[str] | np.ndarray, *, encoder: str) -> None:
    """Raise `NonFiniteFeaturesError` naming the first tiles whose vector has NaN or inf."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        names = [str(t) for t in np.asarray(tile_ids)[bad][:5]]
        raise NonFiniteFeaturesError(
            f"encoder {encoder!r} produced NaN or infinite features for {int(bad.sum())} "
            f"tile(s), first: {', '.join(names)}; with a GPU try --precision fp32 (fp16 can "
            "overflow); otherwise report it as a bug with one of these tiles"
        )


def features_table(
    tile_ids: list[str], slide_id: str, encoder: str, values: np.ndarray
) -> pa.Table:
    """The Arrow table of one slide's features (vectors checked finite)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] != len(tile_ids):
        raise ValueError(f"expected {len(tile_ids)} vectors, got an array of shape {values.shape}")
    check_finite(values, tile_ids, encoder=encoder)
    dim = values.shape[1]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), dim)
    n = len(tile_ids)
    return pa.table(
        {
            "tile_id": pa.array(tile_ids, pa.string()),
            "slide_id": pa.array([slide_id] * n, pa.string()),
            "encoder": pa.array([encoder] * n, pa.string()),
            "features": vectors,
        }
    )


def write_slide_features(
    root: Path,
    slide_id: str,
    encoder: str,
    tile_ids: list[str],
    values: np.ndarray,
    *,
    provenance: Provenance | None = None,
) -> Path:
    """Write one slide's file atomically (NaN / inf -> `NonFiniteFeaturesError`)."""
    table = features_table(tile_ids, slide_id, encoder, values)
    schema = features_schema(int(values.shape[1]))
    return write_partition(table, root, slide_id, schema, provenance=provenance)


def read_manifest(root: Path) -> dict[str, Any] | None:
    old = root / _OLD_MANIFEST
    if old.is_file():  # pandas.read_parquet and DuckDB choke on it inside the folder
        old.replace(root / MANIFEST)
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except ValueError:
        raise SchemaError(f"{path}: not valid JSON; delete it and re-run with --force") from None
    return found if isinstance(found, dict) else None


def prepare_output(root: Path, identity: dict[str, Any], *, force: bool) -> None:
    """Record ``identity`` in ``root/_encoder.json``; refuse to mix with other features.

    Existing slide files made by another identity are an error unless ``force`` (then they
    are recomputed, since every slide is redone).
    """
    root.mkdir(parents=True, exist_ok=True)
    found = read_manifest(root)
    changed = sorted(
        k
        for k in set(found or {}) | set(identity)
        if k not in _NOT_COMPARED and (found or {}).get(k) != identity.get(k)
    )
    if found is not None and changed and list_partitions(root) and not force:
        raise UserInputError(
            f"{root} holds features made by another encoder configuration (differs in: "
            f"{', '.join(changed)}); re-run with --force to recompute every slide, or write "
            "elsewhere"
        )
    if found != identity:
        atomic_write_text(root / MANIFEST, json.dumps(identity, indent=2, sort_keys=True))


def _features_dir(source: Workspace | str | os.PathLike[str], encoder: str) -> Path:
    if isinstance(source, Workspace):
        return source.features(encoder)
    path = Path(source)
    workspace = Workspace(path)
    if workspace.config_file.is_file() or workspace.features(encoder).is_dir():
        return workspace.features(encoder)
    return path


def _read_slide(path: Path, slide_id: str) -> pa.Table:
    try:
        found = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from None
    idx = found.get_field_index("features")
    ftype = found.field(idx).type if idx >= 0 else None
    if not isinstance(ftype, pa.FixedSizeListType):
        raise SchemaError(f"{path}: column 'features' should be a fixed-size list of float32")
    schema: TableSchema = features_schema(ftype.list_size)
    check_arrow_schema(found, schema, origin=str(path))
    return pq.read_table(path)


def load_features(
    workspace_or_dir: Workspace | str | os.PathLike[str],
    encoder: str,
    *,
    slide_ids: list[str] | None = None,
) -> FeatureMatrix:
    """Every tile's features made by ``encoder`` (or those of ``slide_ids``).

    ``workspace_or_dir`` is a `Workspace`, a workspace folder, or the folder of one
    encoder's files. ``encoder`` is its name (``timm:vit_small_patch16_224``) or its folder's
    (``timm_vit_small_patch16_224``); ``FeatureMatrix.encoder`` is the name recorded in the
    files. A requested slide without a file, a file made by another encoder, or
    files of different dimensions are errors that name the file.
    """
    root = _features_dir(workspace_or_dir, encoder)
    available = list_partitions(root)
    if not available:
        raise UserInputError(
            f"{root}: no features for encoder {encoder!r}; run `histocurate embed --encoder "
            f"{encoder}` first"
        )
    wanted = available if slide_ids is None else list(slide_ids)
    missing = [s for s in wanted if s not in available]
    if missing:
        raise UserInputError(
            f"{root}: no features for slide(s) {missing[:5]} ({len(missing)} missing); run "
            f"`histocurate embed --encoder {encoder}` to compute them"
        )
    tables = [_read_slide(partition_path(root, s), s) for s in wanted]
    dims = {t.schema.field("features").type.list_size for t in tables}
    if len(dims) > 1:
        raise SchemaError(f"{root}: feature files of different dimensions {sorted(dims)}")
    dim = dims.pop()
    table = pa.concat_tables(tables)
    encoders = set(table.column("encoder").unique().to_pylist())
    # The folder name (features/timm_<name>) may stand for the encoder (timm:<name>).
    accepted = {e for e in encoders if encoder in (e, Workspace(root).features(e).name)}
    if len(encoders) > 1 or (encoders and not accepted):
        foreign = [
            s
            for s, t in zip(wanted, tables, strict=True)
            if set(t.column("encoder").unique().to_pylist()) - {encoder, *accepted}
        ]
        raise SchemaError(
            f"{root}: features made by {sorted(encoders)}, expected {encoder!r}; the file(s) "
            f"of slide(s) {foreign[:5]} hold vectors of another encoder: re-run `histocurate "
            f"embed --encoder {encoder} --force` (or delete those files and run it again)"
        )
    made_by = encoders.pop() if encoders else encoder
    vectors = table.column("features").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    return FeatureMatrix(
        tile_ids=np.asarray(table.column("tile_id").to_pylist(), dtype=object),
        slide_ids=np.asarray(table.column("slide_id").to_pylist(), dtype=object),
        values=np.asarray(flat, dtype=np.float32).reshape(len(table), dim),
        encoder=made_by,
    )
