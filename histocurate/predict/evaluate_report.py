"""Tables, markdown and plots of a model evaluation (`histocurate.predict.evaluate`).

- Table 2 (the paper's layout): one row per indication (``All`` first) and metric (DQ, SQ,
  PQ, mean F1 over the types present), one column per model (``value [95 % CI]``), and
  with two models the paired difference (second - first) and its two-sided p-value;
- per-class F1 over all tiles, same columns, with the support (true nuclei of the type);
- Figure 3a: per-class F1 as grouped bars with the 95 % interval as whiskers, and the PQ
  per indication beside it.

Files (``reports/evaluate/models/<dataset>-<model>[-vs-<model>]/``): table2.csv,
f1_per_class.csv, evaluation.csv (every number, long format, one ``group`` per indication),
report.md and figure3a.png.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from histocurate.io import atomic_path, atomic_write_text
from histocurate.labels import LABELS, cell_type
from histocurate.metrics.report import fmt, fmt_p
from histocurate.runs import Report, markdown_table

if TYPE_CHECKING:
    from histocurate.predict.evaluate import ModelEvaluationRun

_METRICS = {"dq": "DQ", "sq": "SQ", "pq": "PQ", "f1_mean": "Mean F1"}


def _row(table: pd.DataFrame, kind: str, metric: str, label: str | None) -> pd.Series | None:
    sel = table[(table.kind == kind) & (table.metric == metric)]
    sel = sel[sel.cell_type.isna()] if label is None else sel[sel.cell_type == label]
    return sel.iloc[0] if len(sel) else None


def _cells(table: pd.DataFrame, models: list[str], metric: str, label: str | None) -> dict:
    values = table[table.kind == "value"]
    out: dict[str, str] = {}
    for model in models:
        r = _row(values[values.prediction == model], "value", metric, label)
        out[model] = "n/a" if r is None else fmt(r.value, r.ci_low, r.ci_high)
    if len(models) == 2:
        d = _row(table, "difference", metric, label)
        out[f"Difference ({models[1]} - {models[0]})"] = (
            "n/a" if d is None else fmt(d.value, d.ci_low, d.ci_high)
        )
        out["p-value"] = "n/a" if d is None else fmt_p(d.p_value)
    return out


def table2(run: ModelEvaluationRun) -> pd.DataFrame:
    rows = []
    for group, ev in run.evaluations.items():
        first = ev.table.iloc[0]
        for metric, title in _METRICS.items():
            rows.append({"Indication": group, "Metric": title,
                         **_cells(ev.table, run.models, metric, None),
                         "Tiles": int(first["n_tiles"]),
                         "Nuclei": int(first["support"])})  # fmt: skip
    return pd.DataFrame(rows)


def per_class(run: ModelEvaluationRun, group: str = "All") -> pd.DataFrame:
    ev = run.evaluations.get(group) or next(iter(run.evaluations.values()))
    rows = []
    for label in LABELS:
        support = _row(ev.table, "value", "f1", label)
        rows.append({"Cell type": cell_type(label).name,
                     **_cells(ev.table, run.models, "f1", label),
                     "Support": 0 if support is None else int(support.support)})  # fmt: skip
    return pd.DataFrame(rows)


def long_table(run: ModelEvaluationRun) -> pd.DataFrame:
    return pd.concat([ev.table.assign(group=g) for g, ev in run.evaluations.items()],
                     ignore_index=True)  # fmt: skip


def figure(run: ModelEvaluationRun, path: object) -> None:
    """Per-class F1 bars with 95 % whiskers (Figure 3a) and PQ per indication."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ev = run.evaluations.get("All") or next(iter(run.evaluations.values()))
    t = ev.table[(ev.table.kind == "value") & (ev.table.metric == "f1")]
    present = [lab for lab in LABELS if int(t[t.cell_type == lab].support.max()) > 0]
    groups = list(run.evaluations)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5),
                                 gridspec_kw={"width_ratios": [3, 1]})  # fmt: skip
    width = 0.8 / len(run.models)
    for k, model in enumerate(run.models):
        rows = [t[(t.prediction == model) & (t.cell_type == lab)].iloc[0] for lab in present]
        value = np.array([r.value for r in rows], dtype=float)
        low = np.array([r.ci_low for r in rows], dtype=float)
        high = np.array([r.ci_high for r in rows], dtype=float)
        err = np.nan_to_num(np.stack([value - low, high - value]), nan=0.0).clip(min=0)
        x = np.arange(len(present)) + (k - (len(run.models) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(value), width, yerr=err, capsize=3, label=model)
        pq = []
        for g in groups:
            r = _row(run.evaluations[g].table[run.evaluations[g].table.prediction == model],
                     "value", "pq", None)  # fmt: skip
            pq.append((r.value, r.ci_low, r.ci_high) if r is not None else (math.nan,) * 3)
        p = np.array(pq, dtype=float)
        gx = np.arange(len(groups)) + (k - (len(run.models) - 1) / 2) * width
        perr = np.nan_to_num(np.stack([p[:, 0] - p[:, 1], p[:, 2] - p[:, 0]]), nan=0).clip(min=0)
        bx.bar(gx, np.nan_to_num(p[:, 0]), width, yerr=perr, capsize=3, label=model)
    ax.set_xticks(np.arange(len(present)), [cell_type(lab).name for lab in present],
                  rotation=35, ha="right")  # fmt: skip
    ax.set_ylabel("F1 (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Per-class F1 on {run.dataset}")
    ax.legend()
    bx.set_xticks(np.arange(len(groups)), groups, rotation=35, ha="right")
    bx.set_ylim(0, 1)
    bx.set_title("PQ per indication")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # type: ignore[arg-type]
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _pairing(run: ModelEvaluationRun) -> str:
    """How the nuclei were paired and counted, from the options the run used."""
    from histocurate.metrics.evaluate import EvaluationOptions

    opts = run.options or EvaluationOptions()
    multilabel = {
        "each": "a missed one counts as a FN of each of its labels",
        "split": "a missed one splits its FN among its labels",
    }[opts.multilabel]
    aggregate = {"pooled": "DQ/SQ/PQ from counts pooled over tiles",
                 "tile_mean": "DQ/SQ/PQ as the mean over tiles"}[opts.aggregate]  # fmt: skip
    return (
        f"nuclei paired at IoU > {opts.iou_threshold:g}; {aggregate}; per-class F1 with the "
        f"multi-label rules on the consensus label sets ({multilabel})"
    )


def model_report(run: ModelEvaluationRun) -> Report:
    title = f"Model evaluation on {run.dataset}: {' vs '.join(run.models)}"
    if not run.evaluations:
        return Report(title=title, table=run.outcome_table("cells"),
                      warnings=[*run.notes, *run.failure_lines()])  # fmt: skip
    first = next(iter(run.evaluations.values())).table.iloc[0]
    summary = [
        f"Intervals: {first['confidence']:.0%} bootstrap percentile ({int(first['n_boot'])} "
        f"resamples of tiles); {_pairing(run)}"
        + ("; p-values: two-sided paired bootstrap" if len(run.models) == 2 else "")
    ]
    images = [run.out / "figure3a.png"] if run.out is not None else []
    outputs = {"tables": run.out} if run.out is not None else {}
    return Report(title=title, summary=summary, table=run.outcome_table("cells"),
                  tables={"Table 2: detection, segmentation and classification per "
                          "indication": table2(run),
                          "Per-class F1 (all tiles)": per_class(run)},
                  warnings=[*run.notes, *run.failure_lines()], images=images,
                  outputs=outputs)  # fmt: skip


def write_outputs(run: ModelEvaluationRun) -> None:
    """The CSV tables, report.md and figure3a.png under ``run.out``."""
    assert run.out is not None
    run.out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("table2", table2(run)), ("f1_per_class", per_class(run)),
                        ("evaluation", long_table(run))):  # fmt: skip
        with atomic_path(run.out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    figure(run, run.out / "figure3a.png")
    report = model_report(run)
    parts = [f"# {report.title}", "", *report.summary, ""]
    for name, frame in report.tables.items():
        parts += [f"## {name}", "", markdown_table(frame), ""]
    parts += ["![Figure 3a](figure3a.png)", ""]
    if report.warnings:
        parts += ["Notes:", ""] + [f"- {w}" for w in report.warnings]
    atomic_write_text(run.out / "report.md", "\n".join(parts) + "\n")
