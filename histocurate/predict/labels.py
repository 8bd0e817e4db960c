"""The next active-learning round: a model's predictions as tile presence labels.

`histocurate select --indication X --labels-from predictions` trains the rare-type presence
models of round N+1 on what the model of round N found on every tissue tile (rather than on
the few annotated tiles). A tile holds a type when the model found at least
``[predict] presence_min_cells`` (1) cells of that type whose type vote share is at least
``presence_min_confidence`` (0.5): a nucleus counts only when most of its pixels agree on its
type, so the ambiguous ones the model cannot type do not make a tile positive; one such
nucleus suffices, as one annotated cell does for the annotation-derived labels. Every tile
of a predicted slide is labelled: a tile without such a cell is a negative.

`rare_share` measures what a selection holds (the demo prints it for two rounds):

    python -m histocurate.predict.labels -w WS --truth synthetic/truth_tiles.parquet \\
        round1.parquet round2.parquet
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_schema import CELLS, TILES
from histocurate.config import HistocurateConfig
from histocurate.errors import UserInputError
from histocurate.io import partition_path, provenance_token, read_provenance, read_table
from histocurate.labels import LABELS, RARE_LABELS
from histocurate.predict.store import SlidePredictions, models_with_predictions
from histocurate.workspace import Workspace


def choose_model(workspace: Path, source: str) -> str:
    """The model ``predictions`` (the newest) or ``predictions:<model>`` names."""
    found = models_with_predictions(workspace)
    if not found:
        raise UserInputError(
            f"--labels-from predictions: no predictions in {workspace / 'predictions'}; run "
            "`histocurate predict --checkpoint RUN` first"
        )
    if ":" in source:
        wanted = source.split(":", 1)[1]
        if wanted not in found:
            raise UserInputError(
                f"--labels-from {source}: no predictions of {wanted!r} (models with "
                f"predictions: {', '.join(found)})"
            )
        return wanted
    return found[-1]


def prediction_annotations(
    workspace: Workspace, config: HistocurateConfig, tiles: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """(tile_id + label rows of the (tile, type) pairs meeting the threshold, every tile of
    the predicted slides, a description of the source) for `presence_labels`."""
    if config.selection.labels is not None:
        raise UserInputError(
            f"presence labels from --labels {config.selection.labels} and from the model's "
            "predictions (--labels-from predictions): give one of them"
        )
    model = choose_model(workspace.root, config.predict.selection_labels_from)
    out = SlidePredictions(workspace.root, model)
    slides = sorted(set(tiles["slide_id"]))
    done = [s for s in slides if out.cells(s).exists()]
    if not done:
        raise UserInputError(
            f"--labels-from predictions: {model} predicted none of these slides; run "
            f"`histocurate predict --checkpoint {model}`"
        )
    stale = [
        s
        for s in done
        if read_provenance(out.cells(s)).get("tiles")
        != provenance_token(read_provenance(partition_path(workspace.tiles, s)))
    ]
    if stale:
        raise UserInputError(
            f"the {model} predictions of slide(s) {stale[:5]} were made from tiles that have "
            f"changed since; run `histocurate predict --checkpoint {model}` again"
        )
    p = config.predict
    rows = []
    for slide in done:
        cells = read_table(out.cells(slide), CELLS, columns=["tile_id", "label", "confidence"])
        sure = cells[cells["confidence"] >= p.presence_min_confidence].dropna(subset=["label"])
        counts = sure.groupby(["tile_id", "label"]).size()
        rows.append(counts[counts >= p.presence_min_cells].reset_index()[["tile_id", "label"]])
    frame = pd.concat(rows, ignore_index=True)
    frame = frame[frame["label"].isin(LABELS)]
    labelled = tiles.loc[tiles["slide_id"].isin(done), "tile_id"].to_numpy()
    source = (
        f"predictions of {model} on {len(done)} slide(s) (a tile holds a type with >= "
        f"{p.presence_min_cells} cell(s) of it of type confidence >= "
        f"{p.presence_min_confidence:g})"
    )
    return frame.reset_index(drop=True), labelled, source


def rare_share(
    selected: Sequence[str], truth: pd.DataFrame, rare: Sequence[str] = RARE_LABELS
) -> dict[str, float]:
    """Of the ``selected`` tiles: the share holding at least one rare-type nucleus, and the
    share of their nuclei that are of a rare type (``truth``: tile_id, label rows)."""
    ids = set(selected)
    mine = truth[truth["tile_id"].isin(ids)]
    rare_rows = mine["label"].isin(list(rare))
    with_rare = set(mine.loc[rare_rows, "tile_id"])
    return {
        "tiles": float(len(ids)),
        "tiles_with_rare": len(with_rare) / len(ids) if ids else float("nan"),
        "rare_nuclei_share": float(rare_rows.mean()) if len(mine) else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Print the rare-type share of selections (selection Parquet files) against a truth."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("-w", "--workspace", type=Path, default=Path("."))
    parser.add_argument("--truth", type=Path, help="tile_id + label table (truth_tiles).")
    parser.add_argument("selections", nargs="+", type=Path)
    args = parser.parse_args(argv)
    ws = Workspace(args.workspace.resolve())
    truth_path = args.truth if args.truth else ws.truth_tiles
    truth_path = truth_path if truth_path.is_absolute() else ws.root / truth_path
    truth = pd.read_parquet(truth_path, columns=["tile_id", "label"])
    read_table(ws.tiles, TILES, columns=["tile_id"])  # a workspace with tiles, or a clear error
    print(f"{'selection':40} {'tiles':>6} {'with rare type':>15} {'rare nuclei':>12}")
    for path in args.selections:
        chosen = pd.read_parquet(path if path.is_absolute() else ws.root / path)["tile_id"]
        share = rare_share(chosen.tolist(), truth)
        print(f"{path.name:40} {int(share['tiles']):6d} {share['tiles_with_rare']:15.1%} "
              f"{share['rare_nuclei_share']:12.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
