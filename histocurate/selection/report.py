"""The run report of a selection: markdown text, tables, and a mosaic of the chosen tiles.

The same markdown is printed by the CLI and published as a Prefect artifact, so what a
user reads in the shell and in the UI cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from data_schema.selection import ARMS
from histocurate.selection.cv import nested_summary
from histocurate.selection.pipeline import SelectionResult

ARM_COLOURS: dict[str, tuple[int, int, int]] = {
    "diversity": (31, 119, 180),
    "rare": (214, 39, 40),
    "uncertainty": (255, 127, 14),
}


def _md_table(frame: pd.DataFrame, *, floats: str = "{:.3f}") -> str:
    if frame.empty:
        return "_(none)_"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append("-" if np.isnan(v) else floats.format(v))
            else:
                cells.append("-" if v is None or v is pd.NA else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_tables(result: SelectionResult) -> dict[str, pd.DataFrame]:
    """The report's tables by name (each is also a table artifact / CSV file)."""
    sel = result.selection
    arms = sel.groupby("arm").size().reindex(list(ARMS), fill_value=0)
    tables = {
        "arms": arms.rename("tiles").rename_axis("arm").reset_index(),
        "per_slide": result.per_slide,
        "predicted": result.predicted,
    }
    rare = sel[sel["arm"].isin(["rare", "uncertainty"])]
    tables["selected_types"] = (
        rare.groupby(["arm", "rare_type"]).size().rename("tiles").reset_index()
        if len(rare)
        else pd.DataFrame(columns=["arm", "rare_type", "tiles"])
    )
    if result.cv is not None:
        tables["model_choice"] = nested_summary(result.cv)
        tables["cv"] = result.cv.table
        tables["cv_outer"] = result.cv.assessment
    return tables


def render_markdown(result: SelectionResult) -> str:
    """The report text (markdown)."""
    t = report_tables(result)
    lines = [
        f"# Selection: {result.indication}",
        "",
        f"{len(result.selection)} tiles selected from {len(result.per_slide)} slides; arms: "
        f"{', '.join(result.arms)}; encoders: {', '.join(result.encoders)}.",
        "",
        "## Tiles per arm",
        _md_table(t["arms"]),
        "",
        "## Per slide",
        _md_table(result.per_slide),
    ]
    if result.cv is not None:
        predicted = result.predicted.drop(columns="slide_id").sum()
        lines += [
            "",
            "## Predicted rare-type tiles (mean P > 0.5), all slides",
            _md_table(predicted.rename("tiles").rename_axis("rare_type").reset_index()),
            *(
                ["", "Per slide:", "", _md_table(result.predicted)]
                if 0 < len(result.predicted) <= 50
                else []
            ),
            "",
            "## Rare types among selected tiles",
            _md_table(t["selected_types"]),
            "",
            f"## Presence models ({result.n_candidates} candidates per type, "
            f"{result.labelled_tiles} labelled tiles)",
            "Chosen by balanced accuracy in grouped CV (cv_*); nested_* is the outer-fold "
            "estimate of the whole choice procedure.",
            "",
            _md_table(t["model_choice"]),
            "",
            "<details><summary>All candidates</summary>",
            "",
            _md_table(
                result.cv.table[
                    [
                        "rare_type",
                        "candidate",
                        "cv_balanced_accuracy",
                        "cv_std",
                        "inner_balanced_accuracy",
                        "chosen",
                    ]
                ]
            ),
            "",
            "</details>",
        ]
    if result.notes:
        lines += ["", "## Notes", *[f"- {n}" for n in result.notes]]
    if result.timings:
        lines += ["", "Time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())]
    return "\n".join(lines) + "\n"


def mosaic(
    images: Sequence[np.ndarray],
    arms: Sequence[str],
    *,
    thumb: int = 96,
    columns: int = 10,
    border: int = 4,
) -> np.ndarray:
    """Thumbnails in a grid, each framed in its arm's colour, above a legend of the arms'
    colours (with their tile counts); RGB uint8 (H, W, 3)."""
    from PIL import Image, ImageDraw

    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, -(-n // cols))
    cell = thumb + 2 * border
    legend = 22
    canvas = np.full((rows * cell + legend, max(cols * cell, 330), 3), 255, np.uint8)
    for i, (img, arm) in enumerate(zip(images, arms, strict=True)):
        r, c = divmod(i, cols)
        y, x = r * cell, c * cell
        canvas[y : y + cell, x : x + cell] = ARM_COLOURS.get(arm, (128, 128, 128))
        small = np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize((thumb, thumb)))
        canvas[y + border : y + border + thumb, x + border : x + border + thumb] = small[..., :3]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    x, y = 4, rows * cell + 5
    for arm, colour in ARM_COLOURS.items():
        count = sum(a == arm for a in arms)
        draw.rectangle((x, y, x + 12, y + 12), fill=colour)
        label = f"{arm} ({count})"
        draw.text((x + 16, y), label, fill=(0, 0, 0))
        x += 16 + int(draw.textlength(label)) + 14
    return np.asarray(picture)


def selection_mosaic(
    selection: pd.DataFrame,
    tiles: pd.DataFrame,
    *,
    reader: Callable[[Any], np.ndarray] | None = None,
    thumb: int = 96,
) -> tuple[np.ndarray, list[str]]:
    """The mosaic of the selected tiles (tiles table rows give where to read them).

    A tile that cannot be read shows grey, with a note; the mosaic is never a reason for a
    selection to fail.
    """
    if reader is None:
        from histocurate.slides import read_tile

        reader = read_tile
    rows = tiles.set_index("tile_id")
    images: list[np.ndarray] = []
    notes: list[str] = []
    for tile_id in selection["tile_id"]:
        try:
            images.append(reader(rows.loc[str(tile_id)]))
        except Exception as exc:
            images.append(np.full((thumb, thumb, 3), 160, np.uint8))
            if len(notes) < 3:
                notes.append(
                    f"mosaic: tile {tile_id} could not be read ({type(exc).__name__}: {exc})"
                )
    return mosaic(images, list(selection["arm"]), thumb=thumb), notes
