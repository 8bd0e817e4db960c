"""`run_select`: the selection stage on a workspace (read tables, run, write outputs).

`run_select(config, indication, *, mapper=map, progress=None) -> SelectRun` (the stage
contract, `histocurate.runs`): the per-slide passes (scan, score) go through ``mapper``.
Inputs: the tiles table, the features of one or two encoders, and presence labels from the
first of: the table named by ``[selection] labels`` (``--labels``), the consensus of the
workspace's campaigns, their imported points. Nothing else: a production selection never
learns from a synthetic truth (the demo passes its truth with ``--labels``). Outputs:
``selection.parquet/<indication>.parquet`` and ``reports/select/<indication>/`` (report.md,
CSV tables, mosaic.png).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from data_schema import CONSENSUS, POINTS, SELECTION, TILES
from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.features.stage import features_are_stale
from histocurate.io import atomic_path, read_table, write_partition
from histocurate.labels import ANNOTATION_LABELS, cell_type
from histocurate.runs import (
    ItemOutcome,
    Progress,
    Report,
    StageRun,
    progress_mapper,
    timed,
)
from histocurate.selection.pipeline import Mapper, SelectionResult, run_selection
from histocurate.selection.presence import presence_labels
from histocurate.selection.report import render_markdown, report_tables, selection_mosaic
from histocurate.selection.sources import WorkspaceFeatures, encoders_with_features
from histocurate.workspace import Workspace

_PREFERRED = ("phikon", "h0-mini")  # drives K-means when present; builtin comes last


@dataclass
class SelectionInputs:
    """Everything `run_selection` needs, read from a workspace."""

    tiles: pd.DataFrame
    slides: pd.DataFrame
    encoders: list[str]
    labels: pd.DataFrame | None
    labels_source: str
    notes: list[str] = field(default_factory=list)


def choose_encoders(found: list[str], wanted: list[str]) -> list[str]:
    """The configured encoders, or the found ones (phikon first, builtin last), at most two."""
    if wanted:
        return wanted
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    ordered = sorted(found, key=lambda e: (rank.get(e, len(rank)), e == "builtin", e))
    return ordered[:2]


def normalised_labels(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Labels as ontology ids (display names such as "Mitotic figure" accepted); a label
    the ontology does not know is an error naming the file and the rows."""
    frame = frame.dropna(subset=["label"])
    names = pd.unique(frame["label"].astype(str))
    known: dict[str, str] = {}
    unknown = []
    for name in names:
        try:
            known[name] = cell_type(name).id
        except KeyError:
            unknown.append(name)
    if unknown:
        rows = frame.index[frame["label"].astype(str).isin(unknown)][:3].tolist()
        raise UserInputError(
            f"{path}: unknown label(s) {unknown[:5]} (first rows {rows}); use the ontology's "
            f"ids or names: {', '.join(ANNOTATION_LABELS)}"
        )
    return frame.assign(label=frame["label"].astype(str).map(known))


def read_annotations(
    workspace: Workspace, config: HistocurateConfig, tiles: pd.DataFrame
) -> tuple[pd.DataFrame | None, np.ndarray | None, str]:
    """(tile_id + label rows, the labelled tile ids or None for 'those in the rows', source)."""
    if config.predict.selection_labels_from != "annotations":  # --labels-from predictions
        from histocurate.predict.labels import prediction_annotations

        return prediction_annotations(workspace, config, tiles)
    path = config.selection.labels
    if path is not None:
        path = config.resolve(path)
        if not path.exists():
            raise UserInputError(f"[selection] labels: {path} does not exist")
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
        if not {"tile_id", "label"} <= set(frame.columns):
            raise UserInputError(f"{path}: presence labels need columns tile_id and label")
        return normalised_labels(frame[["tile_id", "label"]], path), None, str(path)
    consensus = sorted(workspace.campaigns.glob("*/consensus.parquet"))
    if consensus:
        frames = [read_table(p, CONSENSUS, columns=["tile_id", "label"]) for p in consensus]
        frame = pd.concat(frames, ignore_index=True).dropna(subset=["label"])
        if len(frame):
            return frame, None, ", ".join(map(str, consensus))
    if workspace.points.exists():
        frame = read_table(workspace.points, POINTS, columns=["tile_id", "label"])
        if len(frame):
            return frame, None, str(workspace.points)
    return None, None, "none"


def check_fresh_features(ws: Workspace, encoders: list[str], slide_ids: list[str]) -> None:
    """Refuse features made from tiles that have changed since (a slide retiled)."""
    for encoder in encoders:
        stale = [s for s in slide_ids if features_are_stale(ws, encoder, s)]
        if stale:
            raise UserInputError(
                f"the {encoder} features of slide(s) {stale[:5]} were made from tiles that "
                f"have changed since (the slide was retiled); run `histocurate embed "
                f"--encoder {encoder}` first (it redoes only those slides)"
            )


def gather_inputs(config: HistocurateConfig, indication: str) -> SelectionInputs:
    """Read the tiles, find encoders and labels for ``indication``."""
    ws = Workspace.of(config)
    tiles = read_table(ws.tiles, TILES)
    if tiles.empty:
        raise UserInputError(f"{ws.tiles}: no tiles; run `histocurate tile` first")
    wanted = tiles.loc[tiles["indication"] == indication, "slide_id"].unique().tolist()
    if not wanted:
        known = sorted(tiles["indication"].unique())
        raise UserInputError(
            f"no slide of indication {indication!r} in {ws.tiles} (indications "
            f"there: {', '.join(known)})"
        )
    encoders = choose_encoders(encoders_with_features(ws, wanted), list(config.selection.encoders))
    if not encoders:
        raise UserInputError(
            f"no features for the slides of {indication} under {ws.root / 'features'}; "
            "run `histocurate embed` first"
        )
    notes = []
    with_features = set.intersection(
        *({p.stem for p in ws.features(e).glob("*.parquet")} for e in encoders)
    )
    missing = [s for s in wanted if s not in with_features]
    if len(missing) == len(wanted):
        raise UserInputError(
            f"no slide of {indication} has features of {encoders}; run `histocurate "
            f"embed --encoder {encoders[0]}`"
        )
    if missing:
        notes.append(
            f"{len(missing)} slide(s) of {indication} have no features of {encoders} and are "
            f"left out (first: {missing[0]})"
        )
    tiles = tiles[tiles["slide_id"].isin(with_features)]
    annotations, labelled_ids, source = read_annotations(ws, config, tiles)
    labels = None
    if annotations is not None:
        table = presence_labels(annotations, config.selection.rare_types, tile_ids=labelled_ids)
        slide_of = tiles.set_index("tile_id")["slide_id"]
        table = table[table.index.isin(slide_of.index)]
        labels = table.reset_index().assign(
            slide_id=lambda f: f["tile_id"].map(slide_of).astype(str)
        )
    # the slides whose features the run reads: the indication's, and the labelled ones
    # when presence models are trained
    learning = {"rare", "uncertainty"} & set(config.selection.arms)
    read = set(wanted) | (set(labels["slide_id"]) if learning and labels is not None else set())
    check_fresh_features(ws, encoders, sorted(read & with_features))
    slides = (
        tiles.groupby("slide_id")
        .agg(
            cohort=("cohort", "first"),
            indication=("indication", "first"),
            n_tiles=("tile_id", "size"),
        )
        .reset_index()
    )
    return SelectionInputs(tiles, slides, encoders, labels, source, notes)


@dataclass
class SelectRun(StageRun):
    """One indication's selection: the result, the files written, the report."""

    stage: ClassVar[str] = "select"
    result: SelectionResult | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    def report(self) -> Report:
        assert self.result is not None
        tables = {
            name: frame
            for name, frame in report_tables(self.result).items()
            if name != "cv"  # the long table stays a CSV file; model_choice summarises it
        }
        return Report(
            title=f"Selection: {self.result.indication}",
            body=render_markdown(self.result),
            tables=tables,
            images=[self.paths["mosaic"]] if "mosaic" in self.paths else [],
            outputs={k: v for k, v in self.paths.items() if k in ("selection", "report", "mosaic")},
        )


def run_select(
    config: HistocurateConfig,
    indication: str,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
) -> SelectRun:
    """Run the selection of ``indication`` on the workspace and write its outputs."""

    def run() -> SelectRun:
        inputs = gather_inputs(config, indication)
        ws = Workspace.of(config)
        source = WorkspaceFeatures(ws.root, tuple(inputs.encoders))
        result = run_selection(
            indication,
            inputs.slides,
            source,
            inputs.labels,
            config=config.selection,
            mapper=progress_mapper(mapper, progress),
        )
        result.notes[:0] = [*inputs.notes, f"presence labels: {inputs.labels_source}"]
        paths = write_outputs(ws, result, inputs.tiles, mosaic=config.selection.mosaic)
        n = len(result.selection)
        return SelectRun([ItemOutcome(indication, "done", count=n)], result=result, paths=paths)

    selected, seconds = timed(run)
    selected.seconds = seconds
    return selected


def write_outputs(
    ws: Workspace, result: SelectionResult, tiles: pd.DataFrame, *, mosaic: bool
) -> dict[str, Path]:
    """Write the selection partition and the report folder; return the paths by name."""
    paths = {
        "selection": write_partition(result.selection, ws.selection, result.indication, SELECTION)
    }
    folder = ws.reports / "select" / result.indication
    folder.mkdir(parents=True, exist_ok=True)
    if mosaic and len(result.selection):
        from PIL import Image

        image, notes = selection_mosaic(result.selection, tiles)
        result.notes.extend(notes)
        with atomic_path(folder / "mosaic.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        paths["mosaic"] = folder / "mosaic.png"
    for name, frame in report_tables(result).items():
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        paths[name] = folder / f"{name}.csv"
    with atomic_path(folder / "report.md") as tmp:
        Path(tmp).write_text(render_markdown(result), encoding="utf-8")
    paths["report"] = folder / "report.md"
    # a table or mosaic of an earlier run that this run did not make would pass for its own
    written = set(paths.values())
    for stale in [*folder.glob("*.csv"), folder / "mosaic.png"]:
        if stale not in written:
            stale.unlink(missing_ok=True)
    return paths
