"""Does selection find rare cells? Rare-type share of nuclei in selected vs random tiles.

The analogue of the paper's Table 1, on the synthetic cohort (truth known). For each
indication, presence models are trained on the truth of the OTHER indications' tiles only
(leave-one-indication-out: the tiles being selected were never seen labelled), then the
indication's tiles are selected with every arm. Per rare type: the share of that type
among all nuclei of the selected tiles (all indications pooled), against the same share in
random selections of the same size per indication (mean over ``--draws`` draws), and
against a diversity-only selection of the same size. Target: the full selection at least
doubles the random share, averaged over the rare types.

    python benchmarks/selection_enrichment.py [--workspace DIR] [--n-tiles 20]
        [--n-uncertain 10] [--draws 500] [--slides-per-indication 3] [--size 4096]

The workspace (synthetic cohort, tiles, builtin features) is built when missing and reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_schema import TILES, TRUTH  # noqa: E402
from histocurate.config import SelectionConfig, load_config  # noqa: E402
from histocurate.io import read_table  # noqa: E402
from histocurate.labels import RARE_LABELS  # noqa: E402
from histocurate.selection.cv import nested_summary  # noqa: E402
from histocurate.selection.pipeline import run_selection  # noqa: E402
from histocurate.selection.sources import WorkspaceFeatures  # noqa: E402
from histocurate.workspace import Workspace  # noqa: E402

INDICATIONS = ["LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"]


def build_workspace(root: Path, *, per_indication: int, size: int, encoder: str) -> Workspace:
    """Synthetic cohort -> tiles -> features (each step skipped when already done)."""
    from histocurate.cli.app import main
    from histocurate.features import embed_workspace
    from histocurate.synth import generate_cohort, write_manifest

    ws = Workspace(root.resolve())
    if not ws.config_file.exists():
        assert main(["init", str(root)]) == 0
    if not ws.tiles.exists():
        slides = generate_cohort(
            ws.synthetic,
            indications=INDICATIONS,
            slides_per_indication=per_indication,
            width_px=size,
            height_px=size,
        )
        write_manifest(slides, root / "slides.csv")
        assert main(["tile", "-w", str(root), "--no-prefect"]) == 0
    if not ws.features(encoder).is_dir():
        embed_workspace(load_config(ws.root), encoder=encoder)
    return ws


def nuclei_per_tile(ws: Workspace, tiles: pd.DataFrame) -> pd.DataFrame:
    """Nuclei of each type per tile (rows: every tile; columns: labels + 'all')."""
    from histocurate.synth import truth_in_tiles

    truth = read_table(
        ws.truth, TRUTH, columns=["slide_id", "nucleus_id", "x", "y", "label", "polygon"]
    )
    inside = truth_in_tiles(truth, tiles)
    counts = pd.crosstab(inside["tile_id"], inside["label"]).reindex(tiles["tile_id"], fill_value=0)
    counts["all"] = counts.sum(axis=1)
    return counts


def shares(counts: pd.DataFrame, tile_ids: list[str]) -> pd.Series:
    """Share of each rare type among all nuclei of ``tile_ids``."""
    sub = counts.loc[tile_ids]
    total = max(int(sub["all"].sum()), 1)
    return pd.Series({t: sub[t].sum() / total if t in sub else 0.0 for t in RARE_LABELS})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/histocurate-selection-bench"))
    parser.add_argument("--encoder", default="builtin")
    parser.add_argument("--n-tiles", type=int, default=20)
    parser.add_argument("--n-uncertain", type=int, default=10)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--slides-per-indication", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kmeans-clusters", type=int, default=20, help="K of the diversity arm.")
    args = parser.parse_args()

    ws = build_workspace(
        args.workspace,
        per_indication=args.slides_per_indication,
        size=args.size,
        encoder=args.encoder,
    )
    tiles = read_table(ws.tiles, TILES)
    have = {p.stem for p in ws.features(args.encoder).glob("*.parquet")}
    tiles = tiles[tiles["slide_id"].isin(have)].reset_index(drop=True)
    counts = nuclei_per_tile(ws, tiles)
    presence = (counts[list(RARE_LABELS)] > 0).reset_index()
    presence["slide_id"] = tiles["slide_id"].to_numpy()
    slides = (
        tiles.groupby("slide_id")
        .agg(
            cohort=("cohort", "first"),
            indication=("indication", "first"),
            n_tiles=("tile_id", "size"),
        )
        .reset_index()
    )
    source = WorkspaceFeatures(ws.root, (args.encoder,))
    config = SelectionConfig(
        n_tiles=args.n_tiles,
        n_uncertain=args.n_uncertain,
        seed=args.seed,
        kmeans_clusters=args.kmeans_clusters,
    )
    div_config = SelectionConfig(
        n_tiles=args.n_tiles + args.n_uncertain, arms=["diversity"], seed=args.seed
    )
    selected, diversity_only, summaries, sizes = [], [], [], {}
    t0 = time.perf_counter()
    for ind in sorted(slides["indication"].unique()):
        own = set(slides.loc[slides["indication"] == ind, "slide_id"])
        labels = presence[~presence["slide_id"].isin(own)]
        result = run_selection(ind, slides, source, labels, config=config)
        selected.append(result.selection)
        if result.cv is not None:
            summaries.append(nested_summary(result.cv).assign(indication=ind))
        div = run_selection(ind, slides, source, None, config=div_config)
        diversity_only.append(div.selection)
        sizes[ind] = len(result.selection)
        print(
            f"{ind}: {len(result.selection)} tiles "
            f"({result.selection['arm'].value_counts().to_dict()}) of "
            f"{int(slides.loc[slides['indication'] == ind, 'n_tiles'].sum())}",
            flush=True,
        )
    seconds = time.perf_counter() - t0
    sel = pd.concat(selected, ignore_index=True)
    div = pd.concat(diversity_only, ignore_index=True)

    rng = np.random.default_rng(args.seed)
    by_ind = {i: g["tile_id"].to_numpy() for i, g in tiles.groupby("indication")}
    random_shares = []
    for _ in range(args.draws):
        ids = [t for i, n in sizes.items() for t in rng.choice(by_ind[i], n, replace=False)]
        random_shares.append(shares(counts, ids))
    rand = pd.concat(random_shares, axis=1).mean(axis=1)
    full = shares(counts, sel["tile_id"].tolist())
    dshare = shares(counts, div["tile_id"].tolist())
    arm_share = {a: shares(counts, g["tile_id"].tolist()) for a, g in sel.groupby("arm")}
    table = pd.DataFrame(
        {
            "random_%": 100 * rand,
            "selected_%": 100 * full,
            "ratio": full / rand,
            "diversity_only_%": 100 * dshare,
            "div_ratio": dshare / rand,
            **{f"{a}_arm_%": 100 * s for a, s in arm_share.items()},
        }
    )
    table["tiles_with_type_sel"] = [
        int((counts.loc[sel["tile_id"], t] > 0).sum()) for t in RARE_LABELS
    ]
    table.index.name = "rare_type"
    pd.set_option("display.width", 200)
    print()
    print(
        f"Rare-type share of nuclei: {len(sel)} selected tiles over {len(sizes)} indications "
        f"({len(sel) / len(tiles):.0%} of {len(tiles)} tiles), vs {args.draws} random "
        f"selections of the same size per indication; encoder {args.encoder}; "
        f"K={args.kmeans_clusters}; "
        f"{seconds:.0f} s of selection"
    )
    print(table.round(3).to_string())
    mean_ratio = float(table["ratio"].mean())
    print(
        f"\nmean ratio over rare types: full selection {mean_ratio:.2f}x, diversity only "
        f"{table['div_ratio'].mean():.2f}x (target: full >= 2x) -> "
        f"{'PASS' if mean_ratio >= 2 else 'FAIL'}"
    )
    if summaries:
        s = (
            pd.concat(summaries)
            .groupby("rare_type")[["cv_balanced_accuracy", "nested_mean"]]
            .mean()
        )
        print("\nPresence models (mean over the leave-one-indication-out runs):")
        print(s.round(3).to_string())
    return 0 if mean_ratio >= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
