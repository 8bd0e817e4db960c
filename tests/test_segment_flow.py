"""The segment Prefect flow: same masks as the plain stage, recorded with artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_schema import MASKS
from histocurate.config import load_config
from histocurate.io import read_table
from histocurate.segment import run_segment
from histocurate.workspace import Workspace
from tests.test_segment_stage import PROJECT


@pytest.mark.prefect
def test_segment_flow(
    prefect_harness: None,
    segment_workspace: tuple[Path, dict[str, np.ndarray]],
) -> None:
    from flows.segment import segment_flow

    root, truth = segment_workspace
    overrides = {"segment": {"segmenter": "watershed", "tiles_per_batch": 1}}
    run = segment_flow(str(root), overrides=overrides)  # one task per tile
    assert run.segmenter == "watershed" and sorted(run.tiles_done) == sorted(truth)
    flow_masks = read_table(Workspace(root).campaign(PROJECT).masks, MASKS)
    assert len(flow_masks) == run.masks == sum(2 * m.max() for m in truth.values())
    again = segment_flow(str(root), overrides=overrides)
    assert again.tiles_done == [] and sorted(again.tiles_skipped) == sorted(truth)
    # flow == plain: the plain run on the same workspace writes the same masks
    plain = run_segment(load_config(root, overrides), force=True)
    assert sorted(plain.tiles_done) == sorted(truth)
    pd.testing.assert_frame_equal(read_table(Workspace(root).campaign(PROJECT).masks, MASKS),
                                  flow_masks)  # fmt: skip
