"""What an export reads from the workspace: one indication's selection and its tiles.

Only the selection partition of the indication exported is read, and only the tiles
partitions of the slides it selected from (not the cohort's whole tiles table).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from data_schema.selection import SELECTION
from data_schema.tiles import TILES
from histocurate.errors import UserInputError
from histocurate.io import (
    list_partitions,
    partition_path,
    provenance_token,
    read_partition,
    read_provenance,
    read_table,
)

SELECTED_COLUMNS = ["tile_id", "slide_id", "indication"]


def _indication_of(path: Path, found: list[str], indication: str | None) -> str:
    if indication is not None:
        if indication not in found:
            raise UserInputError(
                f"{path}: no selection for indication {indication!r} (there: "
                f"{', '.join(found) or 'none'}); run `histocurate select --indication "
                f"{indication}` or pick one of those"
            )
        return indication
    if len(found) != 1:
        raise UserInputError(
            f"{path} holds the selections of several indications ({', '.join(found)}): pass "
            "--indication with the one to export (one campaign per indication)"
        )
    return found[0]


def read_selection(path: Path, indication: str | None = None) -> pd.DataFrame:
    """The selected tiles (tile_id, slide_id, indication) of one indication, in order.

    ``path`` is the workspace's selection table (one file per indication), one of its files,
    or any Parquet file with ``tile_id`` and ``slide_id`` columns (``indication`` optional).
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: selection not found; run `histocurate select` first")
    if path.is_dir():
        chosen = _indication_of(path, list_partitions(path), indication)
        frame = read_partition(path, chosen, SELECTION, columns=SELECTED_COLUMNS)
    else:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(b"histocurate.schema") == b"selection":
            frame = read_table(path, SELECTION, columns=SELECTED_COLUMNS)
        else:
            frame = pq.read_table(path).to_pandas()
            missing = [c for c in ("tile_id", "slide_id") if c not in frame.columns]
            if missing:
                raise UserInputError(
                    f"{path}: no {' or '.join(repr(m) for m in missing)} column (columns: "
                    f"{list(frame.columns)}); a selection needs tile_id and slide_id"
                )
            if "indication" not in frame.columns:
                frame["indication"] = indication
        found = sorted(frame["indication"].dropna().astype(str).unique())
        if found:
            chosen = _indication_of(path, found, indication)
            frame = frame[frame["indication"] == chosen]
    frame = frame[SELECTED_COLUMNS].copy()
    bad = frame["tile_id"].isna() | frame["slide_id"].isna()
    if bad.any():
        rows = [int(i) for i in frame.index[bad][:5]]
        raise UserInputError(f"{path}: row(s) {rows} have no tile_id or slide_id")
    frame = frame.astype({"tile_id": str, "slide_id": str})
    return frame.drop_duplicates("tile_id").reset_index(drop=True)


def read_selected_tiles(tiles_root: Path, selection: pd.DataFrame) -> pd.DataFrame:
    """The tiles rows of the selected tiles (each slide's partition read once), with the
    selection's indication when the tiles table has none."""
    frames = []
    for slide_id, group in selection.groupby("slide_id", sort=True):
        path = partition_path(tiles_root, str(slide_id))
        if not path.exists():
            raise UserInputError(
                f"{path}: slide {slide_id} of the selection has no tiles; run `histocurate tile`"
            )
        tiles = read_partition(tiles_root, str(slide_id), TILES)
        frames.append(tiles[tiles["tile_id"].isin(group["tile_id"])])
    tiles = (
        pd.concat(frames, ignore_index=True)
        if frames
        else TILES.to_arrow().empty_table().to_pandas()
    )
    unknown = sorted(set(selection["tile_id"]) - set(tiles["tile_id"]))
    if unknown:
        raise UserInputError(
            f"{len(unknown)} selected tile(s) are not in the tiles table {tiles_root}, e.g. "
            f"{unknown[:3]}: the slide was retiled since the selection; run `histocurate select`"
        )
    indications = selection.set_index("tile_id")["indication"]
    tiles = tiles.set_index("tile_id", drop=False).loc[list(selection["tile_id"])]
    tiles["indication"] = indications.reindex(tiles.index).fillna(tiles["indication"]).to_numpy()
    return tiles.reset_index(drop=True)


def tiles_tokens(tiles_root: Path, slide_ids: list[str]) -> dict[str, str]:
    """The provenance token of each slide's tiles partition (changes when retiled)."""
    return {s: provenance_token(read_provenance(partition_path(tiles_root, s))) for s in slide_ids}
