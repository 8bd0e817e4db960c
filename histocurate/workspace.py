"""Where every table of a workspace lives. Stages ask here; no path is spelled twice."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from histocurate.campaign import Campaign
from histocurate.config import CONFIG_FILE, HistocurateConfig, render_toml
from histocurate.errors import WorkspaceError
from histocurate.io import atomic_write_text


@dataclass(frozen=True, slots=True)
class Workspace:
    """The folder a run reads and writes, with one property per table or output folder."""

    root: Path

    @classmethod
    def of(cls, config: HistocurateConfig) -> Workspace:
        return cls(config.workspace)

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def slides(self) -> Path:
        """The validated manifest (table ``slides``)."""
        return self.root / "slides.parquet"

    @property
    def tiles(self) -> Path:
        """Tiles per slide (table ``tiles``, one file per slide)."""
        return self.root / "tiles.parquet"

    @property
    def synthetic(self) -> Path:
        """Synthetic slides and their ground truth (`histocurate synth`)."""
        return self.root / "synthetic"

    @property
    def truth(self) -> Path:
        """Ground truth of the synthetic cohort (table ``truth``, one file per slide)."""
        return self.synthetic / "truth.parquet"

    def features(self, encoder: str) -> Path:
        """Features of one encoder (table ``features``, one file per slide).

        ``timm:<name>`` becomes the folder ``timm_<name>``: characters other than letters,
        digits, '.', '_' and '-' are replaced by '_'.
        """
        return self.root / "features" / re.sub(r"[^A-Za-z0-9._-]", "_", encoder)

    @property
    def selection(self) -> Path:
        """Tiles selected for annotation (table ``selection``, one file per indication)."""
        return self.root / "selection.parquet"

    @property
    def assignments(self) -> Path:
        """Annotators of each exported tile per Cytomine project (table ``assignments``)."""
        return self.root / "assignments.parquet"

    @property
    def points(self) -> Path:
        """Clicks imported from Cytomine (table ``points``)."""
        return self.root / "points.parquet"

    @property
    def import_rejects(self) -> Path:
        """Annotations the import kept aside, with the reason (table ``import_rejects``)."""
        return self.root / "import_rejects.parquet"

    def campaign(self, project: str) -> Campaign:
        """The folder of one campaign (masks, consensus, frozen images, its reports)."""
        return Campaign(self.root, project)

    @property
    def campaigns(self) -> Path:
        """One folder per campaign (``campaigns/<project>/``)."""
        return self.root / "campaigns"

    @property
    def datasets(self) -> Path:
        """Curated datasets, ``datasets/<name>/<version>/`` (`histocurate dataset build`)."""
        return self.root / "datasets"

    @property
    def evaluation(self) -> Path:
        """Metrics of the last `histocurate evaluate` run (table ``evaluation``)."""
        return self.root / "reports" / "evaluate" / "evaluation.parquet"

    @property
    def truth_tiles(self) -> Path:
        """Synthetic truth mapped into the tiles (table ``truth_tiles``), for the demo."""
        return self.synthetic / "truth_tiles.parquet"

    @property
    def reports(self) -> Path:
        """Run reports and pictures (overlays, plots), one sub-folder per stage."""
        return self.root / "reports"


def init_workspace(root: Path, config: HistocurateConfig, *, exist_ok: bool = False) -> Workspace:
    """Create ``root`` with a ``histocurate.toml`` holding ``config``.

    An existing configuration is never overwritten unless ``exist_ok`` says to keep it
    (then nothing is written).
    """
    workspace = Workspace(root.expanduser().resolve())
    if workspace.config_file.exists():
        if exist_ok:
            return workspace
        raise WorkspaceError(
            f"{workspace.config_file} already exists; edit it, or pick another folder"
        )
    workspace.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(workspace.config_file, render_toml(config))
    return workspace
