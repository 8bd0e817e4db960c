"""Matching rule of consensus (histocurate.consensus.matching), on hand-made polygons."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from histocurate.consensus import consensus_nuclei, match_masks
from histocurate.consensus.matching import resolve_component


def _frame(masks: list[tuple[str, object]], tile: str = "t1") -> pd.DataFrame:
    rows = []
    for k, (annotator, geom) in enumerate(masks, start=1):
        c = geom.centroid  # type: ignore[attr-defined]
        rows.append(
            dict(annotation_id=k, tile_id=tile, annotator=annotator, x=c.x, y=c.y,
                 label="lymphocyte", geometry=geom)
        )  # fmt: skip
    return pd.DataFrame(rows)


def _groups(nuclei: pd.DataFrame) -> set[tuple[int, ...]]:
    return {tuple(m) for m in nuclei["members"]}


def test_clean_triangle_is_one_nucleus() -> None:
    masks = [("A", box(0, 0, 10, 10)), ("B", box(1, 0, 11, 10)), ("C", box(0, 1, 10, 11))]
    nuclei = consensus_nuclei(_frame(masks))
    assert _groups(nuclei) == {(1, 2, 3)}
    assert nuclei.loc[0, "annotators"] == ["A", "B", "C"]
    assert nuclei.loc[0, "mean_iou"] == pytest.approx((9 / 11 + 9 / 11 + 81 / 119) / 3)


def test_chain_keeps_the_stronger_pair_and_never_merges_through_the_middle() -> None:
    # A~B (IoU 0.54), B~C (IoU 0.60), A !~ C (IoU 0.29): nucleus {B, C}; A alone (dropped).
    a, b, c = box(0, 0, 10, 10), box(3, 0, 13, 10), box(5.5, 0, 15.5, 10)
    assert a.intersection(c).area / a.union(c).area < 0.4
    nuclei = consensus_nuclei(_frame([("A", a), ("B", b), ("C", c)]))
    assert _groups(nuclei) == {(2, 3)}
    # With the chain's other end stronger, the other pair wins.
    c = box(7, 0, 17, 10)  # B~C IoU 0.43 < A~B 0.54
    nuclei = consensus_nuclei(_frame([("A", a), ("B", b), ("C", c)]))
    assert _groups(nuclei) == {(1, 2)}


def test_two_candidates_from_one_annotator_the_better_one_joins() -> None:
    a1, a2, b = box(0, 0, 10, 10), box(4, 0, 14, 10), box(1, 0, 11, 10)
    nuclei = consensus_nuclei(_frame([("A", a1), ("A", a2), ("B", b)]), min_annotators=1)
    assert _groups(nuclei) == {(1, 3), (2,)}
    by_id = nuclei.set_index("consensus_id")
    assert by_id.loc[1, "mean_iou"] == pytest.approx(9 / 11)
    assert np.isnan(by_id.loc[2, "mean_iou"])


def test_two_candidates_triangle_beats_two_pairs() -> None:
    # A2, B, C are pairwise matched (3 agreements); {A1,B},{A2,C} would keep only 2.
    a1, a2 = box(0, 0, 10, 10), box(4, 0, 14, 10)
    b, c = box(1, 0, 11, 10), box(4.5, 0, 14.5, 10)
    nuclei = consensus_nuclei(_frame([("A", a1), ("A", a2), ("B", b), ("C", c)]))
    assert _groups(nuclei) == {(2, 3, 4)}


def test_one_to_one_prefers_more_matches_over_one_great_match() -> None:
    # A1-B1 0.82 alone, or A1-B2 and A2-B1 (two matches): two matches win.
    a1, a2 = box(0, 0, 10, 10), box(-6, 0, 4, 10)
    b1, b2 = box(-2, 0, 8, 10), box(3, 0, 13, 10)
    nuclei = consensus_nuclei(_frame([("A", a1), ("A", a2), ("B", b1), ("B", b2)]))
    assert _groups(nuclei) == {(1, 4), (2, 3)}


def test_same_pixels_on_different_tiles_never_match() -> None:
    frame = pd.concat([_frame([("A", box(0, 0, 10, 10))], "t1"),
                       _frame([("B", box(0, 0, 10, 10))], "t2")], ignore_index=True)  # fmt: skip
    frame["annotation_id"] = [1, 2]
    assert consensus_nuclei(frame).empty


def test_threshold_is_strict() -> None:
    a, b = box(0, 0, 10, 10), box(0, 0, 10, 4)  # IoU exactly 0.4
    assert consensus_nuclei(_frame([("A", a), ("B", b)])).empty
    assert len(consensus_nuclei(_frame([("A", a), ("B", b)]), iou_threshold=0.39)) == 1


def _random_component(seed: int, n_annot: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        cx, cy = rng.uniform(0, 30, 2)
        masks.append((f"A{rng.integers(n_annot)}", Point(cx, cy).buffer(rng.uniform(5, 9), 8)))
    return _frame(masks)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_annot=st.integers(2, 4), n=st.integers(2, 9))
def test_groups_are_cliques_and_order_free(seed: int, n_annot: int, n: int) -> None:
    frame = _random_component(seed, n_annot, n)
    nuclei = consensus_nuclei(frame, min_annotators=1)
    geoms = dict(zip(frame["annotation_id"], frame["geometry"], strict=True))
    annot = dict(zip(frame["annotation_id"], frame["annotator"], strict=True))
    assert sorted(itertools.chain(*nuclei["members"])) == sorted(frame["annotation_id"])
    for members in nuclei["members"]:
        assert len({annot[m] for m in members}) == len(members)
        for p, q in itertools.combinations(members, 2):
            g, h = geoms[p], geoms[q]
            assert g.intersection(h).area / g.union(h).area > 0.4
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    assert _groups(consensus_nuclei(shuffled, min_annotators=1)) == _groups(nuclei)


def _objective(groups: list[list[int]], iou: dict[tuple[int, int], float]) -> tuple[int, float]:
    pairs = [(min(p, q), max(p, q)) for g in groups for p, q in itertools.combinations(g, 2)]
    return len(pairs), round(sum(iou[p] for p in pairs), 9)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_two_annotator_assignment_equals_exact_search(data: st.DataObject) -> None:
    n_left = data.draw(st.integers(1, 4))
    n_right = data.draw(st.integers(1, 4))
    nodes = list(range(n_left + n_right))
    annotators = [0] * n_left + [1] * n_right
    iou = {}
    for a in range(n_left):
        for b in range(n_left, n_left + n_right):
            if data.draw(st.booleans()):
                iou[(a, b)] = data.draw(st.floats(0.41, 1.0))
    hungarian = resolve_component(nodes, annotators, iou)
    # A third, absent annotator forces the exact search on the same graph.
    exact = resolve_component([*nodes, 99], [*annotators, 2], iou)
    exact = [g for g in exact if g != [99]]
    assert _objective(hungarian, iou) == _objective(exact, iou)


def test_large_components_fall_back_to_progressive_assignment() -> None:
    frame = _random_component(7, 3, 14)
    exact = consensus_nuclei(frame, min_annotators=1)
    tile = np.zeros(len(frame), dtype=np.int64)
    annot = pd.factorize(frame["annotator"])[0]
    geoms = frame["geometry"].to_numpy()
    progressive = match_masks(tile, annot, geoms, exact_limit=0)
    # Valid partition either way: each group one mask per annotator.
    for g in range(progressive.n_groups):
        members = np.flatnonzero(progressive.group == g)
        assert len(set(annot[members])) == len(members)
    assert len(exact) >= 1


def test_missing_and_empty_geometries_take_no_part() -> None:
    geoms = np.array([box(0, 0, 10, 10), None, shapely.Polygon(), box(0, 0, 10, 10)], dtype=object)
    m = match_masks(np.zeros(4, np.int64), np.array([0, 1, 1, 1]), geoms)
    assert m.group[1] == m.group[2] == -1
    assert m.group[0] == m.group[3] >= 0
