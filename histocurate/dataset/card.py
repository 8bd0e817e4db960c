"""The dataset card (``card.md``) and its class plot (``class_distribution.png``).

The card shows what the paper shows of HistoTRAIN and HistoVAL, for this dataset: nuclei per
cell type and indication (Figure 1a, as a stacked bar plot), the share of each understudied
type next to the public datasets (Table 1), each fold's class distribution, nuclei per tile,
the undetermined labels, the annotators, and what rasterisation decided.

Table 1's reference columns are meant to hold the shares that the HistoPLUS paper's Table 1
reports for NuCLS, CoNSeP, Lizard, PanNuke and HistoTRAIN. Those figures are not in this
repository and could not be read when it was written (no network, no copy of the paper), so
`PAPER_TABLE1` is empty and a cell reads "not filled": nothing is invented. Fill
`PAPER_TABLE1` from the paper's Table 1 to show them; the card then says they come from
there. "no class" marks a type the reference dataset has no class for (from its published
class list, so that share is 0 by construction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from histocurate.dataset.classes import display_name
from histocurate.labels import RARE_LABELS
from histocurate.runs import markdown_table

REFERENCES = ("NuCLS", "CoNSeP", "Lizard", "PanNuke", "HistoTRAIN")
NO_CLASS = "no class"
# Types each reference dataset has a class of its own for (from their class lists).
REFERENCE_CLASSES: dict[str, set[str]] = {
    "NuCLS": set(RARE_LABELS),
    "CoNSeP": {"endothelial_cell", "epithelial_cell"},
    "Lizard": {"eosinophil", "neutrophil", "epithelial_cell"},
    "PanNuke": {"epithelial_cell"},
    "HistoTRAIN": set(RARE_LABELS),
}
PAPER_TABLE1: dict[str, dict[str, float]] = {ref: {} for ref in REFERENCES}
"""Shares (%) of the HistoPLUS paper's Table 1, by reference and type. Empty: the paper was
not available offline; fill it from the paper's Table 1 (never estimate)."""
NOT_FILLED = "not filled"


def _reference_cell(reference: str, label: str) -> str:
    if label not in REFERENCE_CLASSES[reference]:
        return NO_CLASS
    value = PAPER_TABLE1[reference].get(label)
    return NOT_FILLED if value is None else f"{value:.2f}%"


def table1_note() -> str:
    """What the card says of Table 1's reference columns: where the figures come from, or
    that they are not filled and why."""
    filled = sum(len(v) for v in PAPER_TABLE1.values())
    wanted = sum(len(REFERENCE_CLASSES[r] & set(RARE_LABELS)) for r in REFERENCES)
    source = (
        "Reference columns (NuCLS, CoNSeP, Lizard, PanNuke, HistoTRAIN): the shares the "
        "HistoPLUS paper (Owkin 2025) reports in its Table 1. "
    )
    if not filled:
        status = (
            f"'{NOT_FILLED}': none of those figures is filled in: the paper's numbers are not "
            "in this repository and were not available offline when it was written, and "
            "histocurate does not estimate them; copy them from the paper's Table 1 into "
            "`histocurate.dataset.card.PAPER_TABLE1` to show them."
        )
    else:
        status = (
            f"{filled} of {wanted} figures are filled in, from the paper's Table 1 "
            f"(`histocurate.dataset.card.PAPER_TABLE1`); '{NOT_FILLED}': not copied yet."
        )
    return (
        source
        + status
        + f" '{NO_CLASS}': the reference dataset has no class for that type (its published "
        "class list), so its share is 0 by construction. 'this dataset' is computed here."
    )


def class_frame(info: dict[str, Any], by: str) -> pd.DataFrame:
    """Nuclei per class (rows, display names) and per fold or indication (columns)."""
    groups: dict[str, dict[str, int]] = info["counts"][by]
    labels = [c["id"] for c in info["classes"]] + ["undetermined"]
    frame = pd.DataFrame(
        {g: [groups[g].get(lab, 0) for lab in labels] for g in groups},
        index=[display_name(lab) if lab != "undetermined" else "Undetermined" for lab in labels],
    )
    frame["total"] = frame.sum(axis=1)
    return frame


def save_class_plot(info: dict[str, Any], path: Path) -> Path:
    """Stacked bars: nuclei per cell type, one colour per indication (Figure 1a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = class_frame(info, "per_indication").drop(columns="total")
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    bottom = pd.Series(0, index=frame.index, dtype=float)
    for indication in frame.columns:
        ax.bar(frame.index, frame[indication], bottom=bottom, label=indication)
        bottom += frame[indication]
    ax.set_ylabel("nuclei")
    ax.set_title(f"{info['name']}@{info['version']}: nuclei per cell type and indication")
    ax.tick_params(axis="x", rotation=60)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    if len(frame.columns):
        ax.legend(title="indication", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _table1(info: dict[str, Any]) -> pd.DataFrame:
    per_class = info["counts"]["per_class"]
    determined = sum(v for k, v in per_class.items() if k != "undetermined")
    rows = []
    for label in RARE_LABELS:
        if label in per_class:
            share = f"{100 * per_class[label] / determined:.2f}%" if determined else "0.00%"
        else:
            share = NO_CLASS
        rows.append(
            {
                "cell type": display_name(label),
                "this dataset": share,
                **{ref: _reference_cell(ref, label) for ref in REFERENCES},
            }
        )
    return pd.DataFrame(rows)


def _per_tile(tiles: pd.DataFrame) -> pd.DataFrame:
    n = tiles["n_nuclei"].astype(float)
    if n.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        [
            {
                "min": n.min(),
                "median": n.median(),
                "mean": round(n.mean(), 1),
                "max": n.max(),
                "tiles without nuclei": int((n == 0).sum()),
            }
        ]
    )


def _annotators(nuclei: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    by_count = nuclei["n_annotators"].value_counts().sort_index()
    first = pd.DataFrame({"annotators": by_count.index, "nuclei": by_count.to_numpy()})
    people = nuclei["annotators"].explode().dropna().value_counts()
    second = pd.DataFrame({"annotator": people.index, "nuclei": people.to_numpy()})
    return first, second


def _labels_section(nuclei: pd.DataFrame) -> list[str]:
    total = len(nuclei)
    undetermined = nuclei[nuclei["label"].isna()]
    only_unknown = int(undetermined["labels"].map(lambda v: list(v) == ["unknown"]).sum())
    share = 100 * len(undetermined) / total if total else 0.0
    return [
        f"- undetermined: {len(undetermined)} of {total} nuclei ({share:.1f}%), type map 255 "
        "(skipped by the NT loss); their label sets are in nuclei.parquet",
        f"- of which every annotator said 'unknown': {only_unknown}; annotators disagreed: "
        f"{len(undetermined) - only_unknown}",
    ]


def _raster_section(info: dict[str, Any]) -> list[str]:
    raster = info.get("rasterisation", {})
    vanished = raster.get("vanished", [])
    lines = [
        f"- overlaps (smallest nucleus wins a contested pixel): "
        f"{raster.get('contested_pixels', 0)} pixel(s), {raster.get('contested_nuclei', 0)} "
        "nuclei lost pixels",
        f"- nuclei clipped by the tile border: {raster.get('clipped_nuclei', 0)}",
        f"- tiles resampled to {info.get('mpp')} um/px: {raster.get('resampled_tiles', 0)}",
        f"- nuclei that vanished on rasterisation: {len(vanished)}",
    ]
    lines += [
        f"  - tile {v['tile_id']}, {v['source']} {v['source_id']}: {v['reason']}"
        for v in vanished[:20]
    ]
    return lines


def render_card(info: dict[str, Any], tiles: pd.DataFrame, nuclei: pd.DataFrame) -> str:
    """The card as markdown (``tiles``: tile metadata; ``nuclei``: summary columns)."""
    counts, folds = info["counts"], info.get("folds", {})
    parts = [
        f"# Dataset card: {info['name']}@{info['version']}",
        "",
        f"- created {info['created_at']}; source: {info.get('source')}"
        + (f"; campaign: {info['project']}" if info.get("project") else ""),
        f"- {counts['tiles']} tiles from {counts['slides']} slides, {counts['nuclei']} nuclei; "
        f"indications: {', '.join(f'{k} ({v})' for k, v in counts['indications'].items())}",
        f"- {info.get('mpp')} um/px, tiles {info.get('tile_size') or info.get('tile_sizes')} "
        f"px; {folds.get('n', '?')} folds",
        f"- content hash {info['content_hash'][:16]}",
        "",
        "## Nuclei per cell type and indication",
        "",
        markdown_table(class_frame(info, "per_indication").reset_index(names="cell type")),
        "",
        f"![class distribution]({info['files']['plot']})",
        "",
        "## Understudied cell types (share of typed nuclei; the paper's Table 1)",
        "",
        markdown_table(_table1(info)),
        "",
        table1_note(),
        "",
        "## Folds (grouped by slide, stratified by cell type)",
        "",
        markdown_table(class_frame(info, "per_fold").reset_index(names="cell type")),
        "",
        "Tiles per fold: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts["tiles_per_fold"].items())),
    ]
    if folds.get("uncovered"):
        parts.append(f"\nTypes on enough slides but missing from a fold: {folds['uncovered']}")
    parts += [
        "",
        "## Nuclei per tile",
        "",
        markdown_table(_per_tile(tiles)),
        "",
        "## Labels",
        "",
        *_labels_section(nuclei),
        "",
    ]
    by_count, people = _annotators(nuclei)
    parts += ["## Annotators", "", markdown_table(by_count), "", markdown_table(people), ""]
    parts += ["## Rasterisation", "", *_raster_section(info), ""]
    left = info.get("left_out", [])
    if left:
        reasons = pd.Series([item["reason"] for item in left]).value_counts()
        parts += ["## Tiles left out", ""]
        parts += [f"- {reason}: {n}" for reason, n in reasons.items()]
        parts += [f"  - {item['tile_id']}: {item['reason']}" for item in left[:20]]
        parts.append("")
    provenance = info.get("provenance", {})
    parts += ["## Provenance", ""]
    parts += [f"- {key}: {value}" for key, value in provenance.items()]
    return "\n".join(parts).rstrip() + "\n"
