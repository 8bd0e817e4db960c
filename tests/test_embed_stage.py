"""`histocurate embed` on a tiny workspace of real (synthetic-tissue) TIFF slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schema import TILES
from histocurate.cli.app import main
from histocurate.config import load_config
from histocurate.features import load_features, run_embed
from histocurate.features.stage import features_are_stale
from histocurate.features.store import write_slide_features
from histocurate.io import read_partition, write_partition
from histocurate.slides.tile_reader import close_all
from histocurate.workspace import Workspace
from tests.slide_files import tissue_image, write_slide


def make_workspace(root: Path, slides: int = 2, size: int = 1536) -> Path:
    """A workspace with ``slides`` small slides, tiled (4 tiles of 448 px each at 1536 px)."""
    assert main(["init", str(root)]) == 0
    lines = ["slide_id,path,indication"]
    for i in range(slides):
        rgb = tissue_image(size, size, seed=i)
        rng = np.random.default_rng(i)
        for y, x in rng.integers(size // 4, 3 * size // 4 - 12, (150, 2)):  # nuclei
            rgb[y : y + 10, x : x + 10] = (80, 40, 140)
        write_slide(root / f"s{i}.tiff", rgb, mpp=0.25)
        lines.append(f"s{i},s{i}.tiff,LUAD")
    (root / "slides.csv").write_text("\n".join(lines) + "\n")
    assert main(["tile", "-w", str(root), "--no-prefect", "--tissue-threshold", "0.2"]) == 0
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("embed") / "ws")


def test_cli_embeds_resumes_and_forces(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", "-w", str(workspace), "--no-prefect", "--num-workers", "2"]) == 0
    features = load_features(Workspace(workspace), "builtin")
    assert len(features) > 0 and set(features.slide_ids) == {"s0", "s1"}
    assert np.isfinite(features.values).all() and features.values.std(axis=0).max() > 0
    assert (workspace / "features" / "builtin" / "_encoder.json").is_file()
    capsys.readouterr()
    assert main(["embed", "-w", str(workspace), "--no-prefect"]) == 0
    assert "skipped" in capsys.readouterr().out
    config = load_config(workspace, {"features": {"num_workers": 0}})
    again = run_embed(config, force=True, slide_ids=["s1"]).outcomes
    assert [(o.item, o.status) for o in again] == [("s1", "done")]
    np.testing.assert_array_equal(
        load_features(workspace, "builtin", slide_ids=["s1"]).values,
        features.subset(features.slide_ids == "s1").values,
    )


def test_a_retiled_slide_is_embedded_again_and_only_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_workspace(tmp_path / "ws")
    config = load_config(root, {"features": {"num_workers": 0}})
    assert {o.status for o in run_embed(config).outcomes} == {"done"}
    before = load_features(root, "builtin", slide_ids=["s1"])
    # s1 re-scanned under the same id (other tissue): `tile` retiles it, `embed` follows
    rgb = tissue_image(1536, 1536, seed=7)
    rgb[400:1100:20, 400:1100] = (80, 40, 140)
    write_slide(root / "s1.tiff", rgb, mpp=0.25)  # this process has the old file open
    assert main(["tile", "-w", str(root), "--no-prefect", "--tissue-threshold", "0.2"]) == 0
    ws = Workspace(root)
    assert features_are_stale(ws, "builtin", "s1") and not features_are_stale(ws, "builtin", "s0")
    select = ["select", "-w", str(root), "--indication", "LUAD", "--arms", "diversity",
              "--n-tiles", "2", "--no-prefect"]  # fmt: skip
    capsys.readouterr()
    assert main(select) == 2  # selection refuses features of tiles that changed
    assert "retiled" in capsys.readouterr().err
    outcomes = {o.item: o.status for o in run_embed(config).outcomes}
    assert outcomes == {"s0": "skipped", "s1": "done"}
    after = load_features(root, "builtin", slide_ids=["s1"])  # read from the new pixels
    assert list(after.tile_ids) == list(before.tile_ids)  # same tissue outline, same tiles
    assert np.abs(after.values - before.values).max() > 0.1
    assert {o.status for o in run_embed(config).outcomes} == {"skipped"}
    assert not features_are_stale(ws, "builtin", "s1")
    assert main(select) == 0


def test_stale_features_block_only_the_selections_that_read_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_workspace(tmp_path / "ws")
    config = load_config(root, {"features": {"num_workers": 0}})
    run_embed(config)
    # s1 moves to another indication: its manifest row changed, so it is retiled
    manifest = root / "slides.csv"
    manifest.write_text(manifest.read_text().replace("s1,s1.tiff,LUAD", "s1,s1.tiff,COAD"))
    assert main(["tile", "-w", str(root), "--no-prefect", "--tissue-threshold", "0.2"]) == 0
    select = ["select", "-w", str(root), "--arms", "diversity", "--n-tiles", "2", "--no-prefect"]
    capsys.readouterr()
    assert main([*select, "--indication", "LUAD"]) == 0  # s0's features are current
    assert main([*select, "--indication", "COAD"]) == 2
    assert "['s1']" in capsys.readouterr().err
    # features written before provenance existed: beside old tiles they pass (nothing to
    # compare), beside tiles written since they are stale
    ws = Workspace(root)
    old = load_features(root, "builtin", slide_ids=["s0"])
    write_slide_features(ws.features("builtin"), "s0", "builtin", list(old.tile_ids), old.values)
    assert features_are_stale(ws, "builtin", "s0")
    tiles = read_partition(ws.tiles, "s0", TILES)
    write_partition(tiles, ws.tiles, "s0", TILES)  # no provenance either
    assert not features_are_stale(ws, "builtin", "s0")


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "empty")]) == 0
    assert main(["embed", "-w", str(tmp_path / "empty"), "--no-prefect"]) == 2
    assert "histocurate tile" in capsys.readouterr().err
    ws = make_workspace(tmp_path / "ws")
    assert main(["embed", "-w", str(ws), "--encoder", "vgg", "--no-prefect"]) == 2
    assert "unknown encoder 'vgg'" in capsys.readouterr().err
    assert main(["embed", "-w", str(ws), "--encoder", "h0-mini", "--no-prefect"]) == 2
    assert "h0_mini_weights" in capsys.readouterr().err
    # A slide damaged after tiling: that slide fails (exit 2: input), the other is written.
    close_all()
    data = (ws / "s1.tiff").read_bytes()
    (ws / "s1.tiff").write_bytes(data[: len(data) // 3])
    assert main(["embed", "-w", str(ws), "--no-prefect", "--num-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "s1" in err and "1 item(s) failed" in err
    assert load_features(ws, "builtin").slide_ids.tolist().count("s0") > 0
