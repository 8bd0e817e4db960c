"""The segment Prefect flow: same masks as the plain stage, recorded with artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schema import MASKS
from histocurate.io import read_table
from histocurate.workspace import Workspace
from tests.test_segment_stage import workspace  # noqa: F401  (fixture)


@pytest.mark.prefect
def test_segment_flow(
    prefect_harness: None,
    workspace: tuple[Path, dict[str, np.ndarray]],  # noqa: F811
) -> None:
    from flows.segment import segment_flow

    root, truth = workspace
    summary = segment_flow(str(root), {"segment": {"segmenter": "watershed"}})
    assert summary["segmenter"] == "watershed" and sorted(summary["tiles_done"]) == sorted(truth)
    masks = read_table(Workspace(root).masks, MASKS)
    assert len(masks) == summary["masks"] == sum(2 * m.max() for m in truth.values())
    again = segment_flow(str(root), {"segment": {"segmenter": "watershed"}})
    assert again["tiles_done"] == [] and sorted(again["tiles_skipped"]) == sorted(truth)
