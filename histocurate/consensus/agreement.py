"""How well the annotators agree: the report beside every consensus run.

Per annotator: clicks, the fraction of them that ended in a kept consensus nucleus, and how
often their type equals the consensus label (nuclei with a determined label, their own vote
a type). Between annotators: Cohen's kappa per pair and the pooled label confusion, on the
nuclei both found; Fleiss' kappa per tile set (tiles annotated by the same annotators), on
the nuclei all of them found and typed. And what was lost: annotations in no kept nucleus,
per type. ``unknown`` votes are left out of the kappas (they say "not sure", not a type) but
appear in the confusion table, where they are informative.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from histocurate.labels import ANNOTATION_LABELS, UNKNOWN


@dataclass(frozen=True, slots=True)
class AgreementReport:
    """Tables of the agreement report (all pandas DataFrames) and a few headline numbers."""

    per_annotator: pd.DataFrame
    pairwise: pd.DataFrame
    fleiss: pd.DataFrame
    confusion: pd.DataFrame  # square, labels x labels (unknown included), pooled over pairs
    dropped: pd.DataFrame
    single_annotator_tiles: list[str] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The report as Markdown (Prefect artifact, reports/consensus/agreement.md)."""
        parts = ["# Consensus agreement", ""]
        parts += [f"- {k}: {_fmt(v)}" for k, v in self.summary.items()]
        if self.single_annotator_tiles:
            shown = ", ".join(self.single_annotator_tiles[:20])
            more = len(self.single_annotator_tiles) - 20
            parts.append(
                f"- tiles with a single annotator (no consensus possible): {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        for title, table in (
            ("Per annotator", self.per_annotator),
            ("Pairwise Cohen's kappa", self.pairwise),
            ("Fleiss' kappa per tile set", self.fleiss),
            ("Dropped annotations per type", self.dropped),
        ):
            parts += ["", f"## {title}", "", markdown_table(table)]
        conf = self.confusion.loc[self.confusion.sum(axis=1) > 0, self.confusion.sum(axis=0) > 0]
        parts += ["", "## Label confusion between annotators (pairs of matched clicks)", ""]
        parts.append(markdown_table(conf.reset_index(names="label")))
        return "\n".join(parts) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (no extra dependency)."""
    if frame.empty:
        return "_none_"
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *rows])


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two raters on the same items (NaN when undefined)."""
    if len(a) == 0:
        return float("nan")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / n**2
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else float("nan")
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa; each item has the same number (>= 2) of ratings. NaN when undefined."""
    if not ratings:
        return float("nan")
    n = len(ratings[0])
    cats = sorted({r for item in ratings for r in item})
    index = {c: k for k, c in enumerate(cats)}
    counts = np.zeros((len(ratings), len(cats)))
    for i, item in enumerate(ratings):
        for r in item:
            counts[i, index[r]] += 1
    p_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / (len(ratings) * n)
    p_bar, p_e = p_item.mean(), float((p_cat**2).sum())
    if p_e >= 1.0:
        return 1.0 if p_bar >= 1.0 else float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def agreement_report(
    annotations: pd.DataFrame,
    nuclei: pd.DataFrame,
    *,
    expected: pd.DataFrame | None = None,
    single_annotator_tiles: Sequence[str] = (),
) -> AgreementReport:
    """Build the report from the annotations consensus started from and the kept nuclei.

    ``annotations``: annotation_id, tile_id, annotator, label (and optionally ``status``
    from `build_consensus`); ``nuclei``: the consensus table (members, annotators,
    member_labels, label). ``expected`` (tile_id, annotator; the Cytomine assignments) lets
    annotators with zero clicks appear with 0.
    """
    kept_ids = {int(m) for members in nuclei["members"] for m in members}
    ann = annotations.assign(matched=annotations["annotation_id"].astype("int64").isin(kept_ids))
    consensus_of: dict[int, str | None] = {}
    for members, label in zip(nuclei["members"], nuclei["label"], strict=True):
        for m in members:
            consensus_of[int(m)] = label if isinstance(label, str) else None
    cons = ann["annotation_id"].astype("int64").map(consensus_of)
    comparable = ann["matched"] & cons.notna() & (ann["label"] != UNKNOWN.id)
    ann = ann.assign(compared=comparable, agrees=comparable & (ann["label"] == cons))
    per = ann.groupby("annotator").agg(
        tiles=("tile_id", "nunique"),
        clicks=("annotation_id", "size"),
        unknown=("label", lambda s: int((s == UNKNOWN.id).sum())),
        matched=("matched", "sum"),
        compared=("compared", "sum"),
        agreeing=("agrees", "sum"),
    )
    if expected is not None and len(expected):
        assigned = expected.groupby("annotator")["tile_id"].nunique().rename("assigned_tiles")
        per = per.join(assigned, how="outer")
        per["assigned_tiles"] = per["assigned_tiles"].fillna(0).astype(int)
    per = per.fillna(0)
    for col in ("tiles", "clicks", "unknown", "matched", "compared", "agreeing"):
        per[col] = per[col].astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        per["fraction_matched"] = per["matched"] / per["clicks"].replace(0, np.nan)
        per["label_agreement"] = per["agreeing"] / per["compared"].replace(0, np.nan)
    per = per.drop(columns="agreeing").reset_index(names="annotator")

    pairwise, confusion = _pairs(nuclei)
    fleiss = _fleiss(ann, nuclei)
    dropped = _dropped(ann)
    summary: dict[str, float] = {
        "annotations": len(ann),
        "consensus nuclei": len(nuclei),
        "fraction of annotations matched": float(ann["matched"].mean()) if len(ann) else np.nan,
        "fraction of nuclei with a determined label": (
            float(nuclei["label"].notna().mean()) if len(nuclei) else np.nan
        ),
        "mean IoU of matched masks": (
            float(np.nanmean(nuclei["mean_iou"].astype(float))) if len(nuclei) else np.nan
        ),
    }
    return AgreementReport(
        per, pairwise, fleiss, confusion, dropped, sorted(single_annotator_tiles), summary
    )


def _pairs(nuclei: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    votes: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    together: Counter[tuple[str, str]] = Counter()
    labels = list(ANNOTATION_LABELS)
    index = {lab: k for k, lab in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for annots, labs in zip(nuclei["annotators"], nuclei["member_labels"], strict=True):
        for (a, la), (b, lb) in itertools.combinations(sorted(zip(annots, labs, strict=True)), 2):
            together[(a, b)] += 1
            confusion[index[la], index[lb]] += 1
            if la != lb:
                confusion[index[lb], index[la]] += 1
            if UNKNOWN.id not in (la, lb):
                pair = votes.setdefault((a, b), ([], []))
                pair[0].append(la)
                pair[1].append(lb)
    rows = []
    for (a, b), n in sorted(together.items()):
        la, lb = votes.get((a, b), ([], []))
        agree = float(np.mean([x == y for x, y in zip(la, lb, strict=True)])) if la else np.nan
        rows.append(
            dict(annotator_a=a, annotator_b=b, nuclei=n, compared=len(la),
                 observed_agreement=agree, cohen_kappa=cohen_kappa(la, lb))
        )  # fmt: skip
    cols = ["annotator_a", "annotator_b", "nuclei", "compared", "observed_agreement", "cohen_kappa"]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(confusion, index=labels, columns=labels)


def _fleiss(ann: pd.DataFrame, nuclei: pd.DataFrame) -> pd.DataFrame:
    tile_set: dict[str, tuple[str, ...]] = {
        str(t): tuple(sorted(set(s))) for t, s in ann.groupby("tile_id")["annotator"]
    }
    items: dict[tuple[str, ...], list[list[str]]] = {}
    tiles_of: Counter[tuple[str, ...]] = Counter(tile_set.values())
    for tile, annots, labs in zip(
        nuclei["tile_id"], nuclei["annotators"], nuclei["member_labels"], strict=True
    ):
        raters = tile_set.get(tile)
        if raters is None or len(raters) < 2 or tuple(sorted(annots)) != raters:
            continue
        if UNKNOWN.id in labs:
            continue
        items.setdefault(raters, []).append(list(labs))
    rows = []
    for raters, n_tiles in sorted(tiles_of.items()):
        if len(raters) < 2:
            continue
        its = items.get(raters, [])
        rows.append(
            dict(tile_set=" + ".join(raters), raters=len(raters), tiles=n_tiles,
                 nuclei=len(its), fleiss_kappa=fleiss_kappa(its))
        )  # fmt: skip
    by_n: dict[int, list[list[str]]] = {}
    for raters, its in items.items():
        by_n.setdefault(len(raters), []).extend(its)
    for n, its in sorted(by_n.items()):
        n_tiles = sum(t for r, t in tiles_of.items() if len(r) == n)
        rows.append(
            dict(tile_set=f"all tiles with {n} annotators", raters=n, tiles=n_tiles,
                 nuclei=len(its), fleiss_kappa=fleiss_kappa(its))
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["tile_set", "raters", "tiles", "nuclei", "fleiss_kappa"])


def _dropped(ann: pd.DataFrame) -> pd.DataFrame:
    lost = ann.loc[~ann["matched"]]
    status = lost["status"] if "status" in lost.columns else pd.Series("dropped", lost.index)
    table = pd.crosstab(lost["label"], status).reindex(index=list(ANNOTATION_LABELS))
    table = table.fillna(0).astype(int)
    for col in ("dropped", "single_annotator_tile", "no_mask"):
        if col not in table.columns:
            table[col] = 0
    table = table[["dropped", "single_annotator_tile", "no_mask"]]
    table.insert(0, "total", table.sum(axis=1))
    table = table.loc[table["total"] > 0]
    return table.reset_index(names="label").rename_axis(columns=None)
