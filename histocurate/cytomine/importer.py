"""Import a campaign's annotations from Cytomine into ``points.parquet``, incrementally.

Every import lists all annotations of the campaign's images (the only way to see
deletions) and compares each with what the tables hold, by id and content (``updated``
time, geometry, terms, author: on Cytomine a relabel does not change ``updated``). Only
when something differs are the tables rewritten, and then only the rows of this project:
other campaigns' points and rejects are kept as they are (a tile exported to two projects
keeps both projects' clicks). Every annotation found is a point or a reject with a reason,
and the import's totals add up: listed = points + rejects; deleted = gone since last time.
An image whose listing failed keeps its previous rows (and its tile is a failed outcome).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_schema.import_rejects import IMPORT_REJECTS
from data_schema.points import POINTS
from histocurate.cytomine import fetch
from histocurate.cytomine.client import Connection
from histocurate.cytomine.convert import ImportOptions, convert
from histocurate.errors import SchemaError
from histocurate.io import read_table, write_table
from histocurate.runs import ItemOutcome

log = logging.getLogger(__name__)
COUNT_COLUMNS = ["annotator", "points", "new", "changed", "deleted", "rejected", "unchanged"]
STATUSES = ["new", "changed", "deleted", "unchanged"]


@dataclass
class ImportResult:
    """What an import found and changed."""

    project: str
    project_ids: list[int]
    images: int
    annotations: int
    points: pd.DataFrame
    rejects: pd.DataFrame
    counts: pd.DataFrame  # per annotator: COUNT_COLUMNS
    written: bool
    deleted: int = 0
    outcomes: list[ItemOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def reject_reasons(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()}

    @property
    def totals(self) -> dict[str, int]:
        return {c: int(self.counts[c].sum()) for c in COUNT_COLUMNS[1:]}


_POINT_CONTENT = ["tile_id", "x", "y", "label", "term_ids", "updated_at", "labelled_by",
                  "reviewed", "assigned", "shape"]  # fmt: skip
_REJECT_CONTENT = ["reason", "location", "term_ids", "updated_at", "reviewed"]


def _terms_text(values: pd.Series) -> pa.Array:
    """Term id lists as text ("12,15"), vectorised."""
    lists = pa.array(values.to_numpy(dtype=object), type=pa.list_(pa.int64()))
    return pc.binary_join(pc.cast(lists, pa.list_(pa.string())), ",")


def _content_hash(frame: pd.DataFrame, columns: list[str], kind: str) -> np.ndarray:
    """A 64-bit digest per row of ``columns`` (exact float bits, list columns as text)."""
    parts = {"kind": pd.Series(kind, index=frame.index)}
    for col in columns:
        values = frame[col]
        if col == "term_ids":
            parts[col] = pd.Series(_terms_text(values).to_pandas().to_numpy(), index=frame.index)
        else:
            parts[col] = values
    table = pd.DataFrame(parts, index=frame.index)
    return pd.util.hash_pandas_object(table, index=False).to_numpy()


def _signatures(points: pd.DataFrame, rejects: pd.DataFrame) -> pd.DataFrame:
    """One row per annotation id: author, tile, image and a digest of its whole content."""
    keys = ["annotation_id", "annotator", "tile_id", "image_id"]
    frames = [
        points[keys].assign(sig=_content_hash(points, _POINT_CONTENT, "point")),
        rejects[keys].assign(sig=_content_hash(rejects, _REJECT_CONTENT, "reject")),
    ]
    both = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    both["annotator"] = both["annotator"].astype(object).fillna("(unknown)")
    return both.set_index(pd.Index(both.pop("annotation_id").astype("int64")))


def changes(
    old_points: pd.DataFrame, old_rejects: pd.DataFrame, points: pd.DataFrame, rejects: pd.DataFrame
) -> pd.DataFrame:
    """One row per annotation now or before: annotator, tile_id, image_id, status (new,
    changed, unchanged, deleted)."""
    old, new = _signatures(old_points, old_rejects), _signatures(points, rejects)
    common = new.index.intersection(old.index)
    status = pd.Series("new", index=new.index, dtype=object)
    status[common] = np.where(
        new.loc[common, "sig"] == old.loc[common, "sig"], "unchanged", "changed"
    )
    gone = old.index.difference(new.index)
    return pd.concat(
        [
            new.drop(columns="sig").assign(status=status),
            old.loc[gone].drop(columns="sig").assign(status="deleted"),
        ]
    )


def count_changes(rows: pd.DataFrame, points: pd.DataFrame, rejects: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: points now, new / changed / deleted since the last import, rejects."""
    counts = pd.crosstab(rows["annotator"], rows["status"]) if len(rows) else pd.DataFrame()
    counts = counts.reindex(columns=STATUSES, fill_value=0)
    counts["points"] = points.groupby("annotator").size()
    counts["rejected"] = (
        rejects.assign(a=rejects["annotator"].fillna("(unknown)")).groupby("a").size()
    )
    counts = counts.fillna(0).astype("int64").rename_axis(index="annotator", columns=None)
    counts = counts.reset_index()
    return counts.reindex(columns=COUNT_COLUMNS).sort_values("annotator").reset_index(drop=True)


def tile_outcomes(
    rows: pd.DataFrame,
    points: pd.DataFrame,
    rejects: pd.DataFrame,
    failed: dict[int, str],
    images: pd.DataFrame,
) -> list[ItemOutcome]:
    """One outcome per tile (or per image that is not a tile): done when its points changed."""
    label = {
        int(i): (str(t) if isinstance(t, str) else f"image {i}")
        for i, t in zip(images["image_id"], images["tile_id"], strict=True)
    }
    per_status = rows.assign(item=rows["image_id"].map(label)).groupby(["item", "status"]).size()
    n_points = points.groupby(points["image_id"].map(label)).size()
    n_rejects = rejects.groupby(rejects["image_id"].map(label)).size()
    bad = {label.get(i, f"image {i}"): why for i, why in failed.items()}
    outcomes = []
    for item in sorted(set(label.values())):
        if item in bad:
            outcomes.append(ItemOutcome(item, "failed", error=bad[item]))
            continue
        counts = {s: int(per_status.get((item, s), 0)) for s in STATUSES}
        changed = counts["new"] + counts["changed"] + counts["deleted"]
        outcomes.append(
            ItemOutcome(
                item,
                "done" if changed else "skipped",
                count=int(n_points.get(item, 0)),
                extra={**counts, "rejected": int(n_rejects.get(item, 0))},
            )
        )
    return outcomes


def _read(path: Path, schema: Any) -> pd.DataFrame:
    if not Path(path).exists():
        return schema.to_arrow().empty_table().to_pandas()
    try:
        return read_table(path, schema)
    except SchemaError as exc:
        if "schema version" not in str(exc):
            raise
        raise SchemaError(
            f"{path} was written by an older histocurate ({exc}); it cannot tell campaigns "
            "apart: move it aside and run `histocurate import --project <P>` again for each "
            "campaign (the clicks are all on Cytomine)"
        ) from None


def import_annotations(
    conn: Connection,
    *,
    project: str,
    points_path: Path,
    rejects_path: Path,
    assignments: pd.DataFrame,
    options: ImportOptions | None = None,
) -> ImportResult:
    """Bring ``points_path`` and ``rejects_path`` up to date with campaign ``project``.

    ``assignments``: the workspace's assignments rows of the project (who may annotate
    which tile; empty: the assignment the export wrote on the images is used).
    """
    options = options or ImportOptions()
    old_points = _read(points_path, POINTS)
    old_rejects = _read(rejects_path, IMPORT_REJECTS)
    campaign = fetch.read_campaign(conn, project, assignments)
    raw, failed = fetch.fetch_annotations(conn, campaign, reviewed=options.reviewed)
    users = {int(u) for u in raw["user"].dropna()} | {int(u) for u in raw["reviewUser"].dropna()}
    names = fetch.usernames(conn, campaign, users)
    for info in campaign.projects:
        if options.reviewed == "exclude" and info.settings.get("numberOfReviewedAnnotations"):
            campaign.notes.append(
                f"project {info.name!r} has {info.settings['numberOfReviewedAnnotations']} "
                "reviewed annotation(s), not imported: use --reviewed include (or only)"
            )
    points, rejects = convert(
        raw,
        project=project,
        info=campaign.main,
        images=campaign.images,
        usernames=names,
        assigned=campaign.assigned,
        layer_users=campaign.layer_users,
        options=options,
    )
    mine_p = (old_points["project"] == project).to_numpy()
    mine_r = (old_rejects["project"] == project).to_numpy()
    keep_p = mine_p & old_points["image_id"].isin(list(failed)).to_numpy()
    keep_r = mine_r & old_rejects["image_id"].isin(list(failed)).to_numpy()
    rows = changes(old_points[mine_p & ~keep_p], old_rejects[mine_r & ~keep_r], points, rejects)
    counts = count_changes(rows, points, rejects)
    changed = bool((rows["status"] != "unchanged").any())
    written = changed or not points_path.exists() or not rejects_path.exists()
    if written:
        all_points = pd.concat([old_points[~mine_p | keep_p], points], ignore_index=True)
        all_rejects = pd.concat([old_rejects[~mine_r | keep_r], rejects], ignore_index=True)
        write_table(
            all_points.sort_values(["project", "tile_id", "annotation_id"]), points_path, POINTS
        )
        write_table(
            all_rejects.sort_values(["project", "annotation_id"]), rejects_path, IMPORT_REJECTS
        )
    return ImportResult(
        project,
        [p.id for p in campaign.projects],
        len(campaign.images),
        len(raw),
        points,
        rejects,
        counts,
        written,
        deleted=int((rows["status"] == "deleted").sum()),
        outcomes=tile_outcomes(rows, points, rejects, failed, campaign.images),
        notes=campaign.notes,
        retries=conn.retries,
    )
