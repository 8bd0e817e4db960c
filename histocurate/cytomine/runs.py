"""The run objects of the Cytomine stages, each with its one report (CLI and Prefect alike)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from histocurate.runs import Report, StageRun


def project_url(base_url: str, project_id: int) -> str:
    """Link to the project in Cytomine's web UI."""
    return f"{base_url.rstrip('/')}/#/project/{project_id}/images"


@dataclass
class ExportRun(StageRun):
    """An export: one outcome per tile (done: uploaded or updated; skipped: up to date)."""

    stage: ClassVar[str] = "export"
    project: str = ""
    indication: str | None = None
    project_id: int | None = None
    base_url: str = ""
    created: bool = False
    isolation: str = "shared"
    members_added: list[str] = field(default_factory=list)
    reader_projects: dict[str, int] = field(default_factory=dict)
    assignments: int = 0
    retries: int = 0

    def actions(self) -> Counter[str]:
        return Counter(str(o.extra.get("image", "")) for o in self.outcomes if o.status != "failed")

    def report(self) -> Report:
        acts = self.actions()
        summary = [
            f"{len(self.outcomes)} tile(s) of {self.indication or 'the selection'}: "
            f"{acts['uploaded']} uploaded, {acts['resumed']} found still importing and followed, "
            f"{acts['present']} already there, {len(self.failed)} failed ({self.seconds:.1f} s)"
        ]
        if self.project_id is not None:
            where = project_url(self.base_url, self.project_id) if self.base_url else ""
            summary.append(
                f"project {self.project!r} (id {self.project_id}, "
                f"{'created' if self.created else 'existing'}) {where}".rstrip()
            )
            if self.isolation == "per-reader":
                summary.append(
                    f"per-reader isolation: {len(self.reader_projects)} reader project(s) "
                    f"'{self.project} / <reader>', each holding only its reader's tiles"
                )
            else:
                summary.append("shared project: each annotator sees and edits only their layer")
        summary.append(f"members added: {', '.join(self.members_added) or 'none'}")
        summary.append(f"{self.assignments} assignment row(s) recorded; {self.retries} retries")
        warnings = self.failure_lines()
        if self.failed:
            names = [o.item for o in self.failed]
            listed = ", ".join(names[:10]) + (
                f" and {len(names) - 10} more" if len(names) > 10 else ""
            )
            warnings.append(
                f"re-run `histocurate export --project {self.project}` to retry the "
                f"{len(self.failed)} failed tile(s) ({listed}); the others are not uploaded again"
            )
        table = pd.DataFrame(
            {
                "tile": [o.item for o in self.outcomes],
                "status": [o.status for o in self.outcomes],
                "image": [o.extra.get("image", "") for o in self.outcomes],
                "frozen": [o.extra.get("frozen", "") for o in self.outcomes],
                "annotators": [o.extra.get("annotators", "") for o in self.outcomes],
                "seconds": [round(o.seconds, 2) for o in self.outcomes],
                "error": [o.error or "" for o in self.outcomes],
            }
        )
        return Report(
            title=f"export to Cytomine project {self.project}",
            summary=summary,
            table=table,
            warnings=warnings,
        )


@dataclass
class ImportRun(StageRun):
    """An import: one outcome per tile (done: its points changed; skipped: unchanged)."""

    stage: ClassVar[str] = "import"
    project: str = ""
    project_ids: list[int] = field(default_factory=list)
    images: int = 0
    annotations: int = 0
    points: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)  # per annotator
    written: bool = False
    retries: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        if self.counts.empty:
            return {}
        return {str(c): int(self.counts[c].sum()) for c in self.counts.columns if c != "annotator"}

    def report(self) -> Report:
        n_rejected = sum(self.rejected.values())
        summary = [
            f"{self.annotations} annotation(s) on {self.images} image(s) of {self.project!r}: "
            f"{self.points} imported as points + {n_rejected} rejected = "
            f"{self.points + n_rejected}; {self.deleted} deleted since the last import",
        ]
        if self.rejected:
            summary.append(
                "rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
            )
        summary.append("tables updated" if self.written else "no change since the last import")
        summary.append(f"{self.retries} retries")
        tiles = self.outcome_table("points")
        tiles["new"] = [o.extra.get("new", 0) for o in self.outcomes]
        tiles["changed"] = [o.extra.get("changed", 0) for o in self.outcomes]
        tiles["deleted"] = [o.extra.get("deleted", 0) for o in self.outcomes]
        tiles["rejected"] = [o.extra.get("rejected", 0) for o in self.outcomes]
        return Report(
            title=f"import of Cytomine project {self.project}",
            summary=summary,
            table=self.counts,
            tables={"tiles": tiles},
            warnings=[*self.notes, *self.failure_lines()],
        )


@dataclass
class PushRun(StageRun):
    """A push of consensus nuclei: one outcome per image (done: changed; skipped: in sync)."""

    stage: ClassVar[str] = "push-consensus"
    project: str = ""
    layer_user: str = ""
    shape: str = "polygons"
    retries: int = 0
    review_project: str = ""  # where the layer lives, shown to the readers
    readers: list[str] = field(default_factory=list)

    def report(self) -> Report:
        posted = int(self.total("posted"))
        removed = int(self.total("removed"))
        kept = int(self.total("kept"))
        where = self.review_project or self.project
        summary = [
            f"{len(self.outcomes)} image(s) of {self.project!r}: {posted} nuclei posted, "
            f"{removed} removed, {kept} already there, as {self.shape} in the layer of "
            f"{self.layer_user!r} in project {where!r} ({self.seconds:.1f} s, "
            f"{self.retries} retries)"
        ]
        if self.readers:
            summary.append(
                f"readers who see the layer there (and cannot edit it): {', '.join(self.readers)}"
            )
        table = self.outcome_table("nuclei")
        for key in ("posted", "removed", "kept"):
            table[key] = [o.extra.get(key, 0) for o in self.outcomes]
        return Report(
            title=f"consensus of {self.project} pushed to Cytomine project {where}",
            summary=summary,
            table=table,
            warnings=self.failure_lines(),
        )


def outcome_dicts(outcomes: list[Any]) -> list[dict[str, Any]]:
    return [o.as_dict() for o in outcomes]
