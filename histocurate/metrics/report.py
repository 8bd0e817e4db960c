"""The evaluation as tables for people: rich (terminal) and markdown (Prefect artifact).

Layout of the paper's Supplementary Tables 3-4: one column per prediction, each cell
``value [low - high]``; detection/segmentation rows (DQ, SQ, PQ), then per-class F1,
precision and recall. With two predictions, a comparison table adds the paired
difference (second - first), its interval and its p-value.
"""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from histocurate.labels import LABELS, cell_type

_SCALAR_NAMES = {"dq": "DQ", "sq": "SQ", "pq": "PQ", "f1_mean": "Mean F1 (classes)"}
_CLASS_NAMES = {"f1": "F1", "precision": "Precision", "recall": "Recall"}


def fmt(value: float, low: float, high: float, *, digits: int = 3) -> str:
    """``0.812 [0.801 - 0.823]``; ``n/a`` when undefined; no interval without resamples."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.{digits}f} - {high:.{digits}f}]"
    return text


def fmt_p(p: object) -> str:
    if p is None or not isinstance(p, float) or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cell(rows: pd.DataFrame, prediction: str, metric: str, cell: str | None) -> pd.Series:
    sel = rows[(rows.prediction == prediction) & (rows.metric == metric)]
    sel = sel[sel.cell_type.isna()] if cell is None else sel[sel.cell_type == cell]
    return sel.iloc[0]


def summary_frames(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Display frames (strings): 'detection', 'classes:<prediction>' per prediction and,
    for two predictions, 'comparison'."""
    values = table[table.kind == "value"]
    names = list(dict.fromkeys(values.prediction))
    det = []
    for metric, title in _SCALAR_NAMES.items():
        row = {"Metric": title}
        for name in names:
            r = _cell(values, name, metric, None)
            row[name] = fmt(r.value, r.ci_low, r.ci_high)
        det.append(row)
    frames = {"detection": pd.DataFrame(det)}
    for name in names:
        cls = []
        for label in LABELS:
            row = {"Cell type": cell_type(label).name}
            for metric, title in _CLASS_NAMES.items():
                r = _cell(values, name, metric, label)
                row[title] = fmt(r.value, r.ci_low, r.ci_high)
            row["Support"] = str(int(_cell(values, name, "f1", label).support))
            cls.append(row)
        frames[f"classes:{name}"] = pd.DataFrame(cls)
    diffs = table[table.kind == "difference"]
    if len(diffs):
        label = str(diffs.prediction.iloc[0])
        comp = []
        for _, r in diffs.iterrows():
            if r.metric not in ("dq", "sq", "pq", "f1_mean", "f1"):
                continue
            what = _SCALAR_NAMES.get(r.metric) or f"F1 {cell_type(r.cell_type).name}"
            a = _cell(values, names[0], r.metric, r.cell_type if r.metric == "f1" else None)
            b = _cell(values, names[1], r.metric, r.cell_type if r.metric == "f1" else None)
            comp.append(
                {
                    "Metric": what,
                    names[0]: fmt(a.value, math.nan, math.nan),
                    names[1]: fmt(b.value, math.nan, math.nan),
                    f"Difference ({label})": fmt(r.value, r.ci_low, r.ci_high),
                    "p-value": fmt_p(r.p_value),
                }
            )
        frames["comparison"] = pd.DataFrame(comp)
    return frames


_TITLES = {
    "detection": "Detection and segmentation (all nuclei)",
    "classes": "Classification per cell type",
    "comparison": "Paired comparison",
}


def title_of(key: str) -> str:
    """The display title of a `summary_frames` key ('classes:pred' -> 'Per class: pred')."""
    return _title(key)


def _title(key: str) -> str:
    kind, _, name = key.partition(":")
    return f"{_TITLES[kind]}: {name}" if name else _TITLES[kind]


def rich_tables(table: pd.DataFrame) -> list[Table]:
    """Rich tables for the terminal."""
    out = []
    for key, frame in summary_frames(table).items():
        t = Table(title=_title(key), title_justify="left")
        for i, col in enumerate(frame.columns):
            # The first column names the row: never squeeze it out on a narrow terminal;
            # values wrap between the estimate and its interval instead.
            first = i == 0
            width = max(len(str(v)) for v in (col, *frame[col])) if first else None
            t.add_column(
                str(col), justify="left" if first else "right", no_wrap=first, min_width=width
            )
        for _, row in frame.iterrows():
            t.add_row(*(str(v) for v in row))
        out.append(t)
    return out


def markdown(table: pd.DataFrame, *, notes: tuple[str, ...] = ()) -> str:
    """The same tables as markdown (Prefect artifact, reports)."""
    first = table.iloc[0]
    parts = [
        f"Intervals: {first['confidence']:.0%} bootstrap percentile over "
        f"{int(first['n_tiles'])} tiles ({int(first['n_boot'])} resamples); DQ/SQ/PQ "
        f"aggregation: {first['aggregate']}.",
    ]
    for key, frame in summary_frames(table).items():
        header = "| " + " | ".join(map(str, frame.columns)) + " |"
        rule = "|" + "|".join("---" for _ in frame.columns) + "|"
        body = [
            "| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)
        ]
        parts.append(f"### {_title(key)}\n\n" + "\n".join([header, rule, *body]))
    if notes:
        parts.append("Notes:\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"
