"""The segment stage: points.parquet -> masks.parquet, resumable, both segmenters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from scipy import ndimage as ndi

from data_schema import MASKS, POINTS, TILES
from histocurate.campaign import decode_png
from histocurate.cli.app import main as cli_main
from histocurate.config import load_config
from histocurate.errors import UserInputError
from histocurate.io import list_partitions, read_table, write_partition
from histocurate.segment import make_segmenter, run_segment, segment_points
from histocurate.workspace import Workspace, init_workspace
from nuclick.model import Checkpoint, NuClick, save_model
from nuclick.testing.synthetic import toy_sample
from tests.campaigns import export_tiles, tiles_rows, write_points
from tests.slide_files import write_slide

SIZE = 128


def _centroids(inst: np.ndarray) -> np.ndarray:
    ids = np.arange(1, inst.max() + 1)
    cents = np.asarray(ndi.center_of_mass(np.ones_like(inst), inst, ids))
    return cents[:, ::-1] + 0.5  # (x, y), pixel-edge coordinates


PROJECT = "p1"


@pytest.fixture(name="segment_workspace")
def segment_workspace_fixture(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two exported tiles of a real slide (toy nuclei), clicks by two annotators, one click
    outside its tile."""
    rng = np.random.default_rng(0)
    samples = [toy_sample(rng, size=SIZE, n_nuclei=8) for _ in range(2)]
    slide = write_slide(
        tmp_path / "s1.tif", np.concatenate([s.image for s in samples], axis=1), levels=1
    )
    root = tmp_path / "ws"
    init_workspace(root, load_config(root, require_file=False, environ={}))
    ws = Workspace(root)
    tile_ids = [f"s1_x{k * SIZE}_y0" for k in range(2)]
    write_partition(tiles_rows(slide, tile_ids, size=SIZE), ws.tiles, "s1", TILES)
    export_tiles(
        root,
        PROJECT,
        {t: s.image for t, s in zip(tile_ids, samples, strict=True)},
        annotators=["alice", "bob"],
    )
    rows, next_id = [], 1
    for k, sample in enumerate(samples):
        for annotator, jitter in (("alice", 0.0), ("bob", 1.5)):
            for x, y in _centroids(sample.inst_map):
                dx, dy = rng.uniform(-jitter, jitter, 2)
                rows.append((next_id, tile_ids[k], annotator, x + dx, y + dy))
                next_id += 1
    rows.append((next_id, tile_ids[0], "bob", SIZE + 3.0, 10.0))  # outside its tile
    write_points(
        root,
        PROJECT,
        pd.DataFrame(rows, columns=["annotation_id", "tile_id", "annotator", "x", "y"]),
    )
    return root, {t: s.inst_map for t, s in zip(tile_ids, samples, strict=True)}


def test_watershed_stage_writes_resumable_masks(
    segment_workspace: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, truth = segment_workspace
    config = load_config(root, environ={})
    run = run_segment(config)  # the only campaign with clicks
    ws = Workspace(root)
    campaign = ws.campaign(PROJECT)
    assert run.segmenter == "watershed" and sorted(run.tiles_done) == sorted(truth)
    assert run.total("outside") == 1 and run.exit_code == 0
    masks = read_table(campaign.masks, MASKS)
    points = read_table(ws.points, POINTS)
    assert len(masks) == len(points) - 1 and set(masks["segmenter"]) == {"watershed"}
    assert set(masks["project"]) == {PROJECT} and (masks["area"] > 10).all()
    # each annotator's masks cover the toy nuclei; the two annotators' masks overlap
    for tile_id, inst in truth.items():
        tile = masks[masks.tile_id == tile_id]
        for annotator, group in tile.groupby("annotator"):
            geoms = shapely.from_wkb(group["polygon"].to_numpy())
            assert len(geoms) == inst.max()
            assert shapely.union_all(geoms).area > 0.6 * (inst > 0).sum(), annotator
    assert (campaign.reports("segment") / "summary.json").is_file() and run.overlays
    again = run_segment(config, project=PROJECT)
    assert again.tiles_done == [] and sorted(again.tiles_skipped) == sorted(truth)
    assert "nothing written" in " ".join(again.report().summary)
    moved = points.copy()
    first = moved.index[moved.tile_id == next(iter(truth))][0]
    moved.loc[first, "x"] += 2
    moved = moved[moved.tile_id == next(iter(truth))]  # the second tile loses all its clicks
    write_points(root, PROJECT, moved.drop(columns="project"))
    third = run_segment(config, project=PROJECT)
    assert third.tiles_done == [next(iter(truth))] and third.tiles_removed == [list(truth)[1]]
    assert list_partitions(campaign.masks) == [next(iter(truth))]


def test_masks_come_from_the_exported_pixels_not_the_slide(
    segment_workspace: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, truth = segment_workspace
    config = load_config(root, environ={})
    ws = Workspace(root)
    (root.parent / "s1.tif").unlink()  # the slide is gone: the frozen pixels suffice
    assert sorted(run_segment(config).tiles_done) == sorted(truth)
    # an altered image is refused for its tile only, naming the file and what to do
    tile = next(iter(truth))
    image = ws.campaign(PROJECT).image_path(tile)
    image.write_bytes(image.read_bytes()[:-10] + b"0123456789")
    run = run_segment(config, force=True)
    assert run.exit_code == 2 and len(run.failed) == 1
    assert str(image) in (run.failed[0].error or "") and "export" in (run.failed[0].error or "")


def test_a_slide_rescanned_after_export_is_named_not_mixed(
    segment_workspace: tuple[Path, dict[str, np.ndarray]],
) -> None:
    """The campaign keeps its frozen pixels (masks and consensus stay consistent), and the
    segment and consensus reports name the slide whose tiles changed since export."""
    from histocurate.consensus.stage import run_consensus
    from histocurate.io import read_partition

    root, _truth = segment_workspace
    config = load_config(root, environ={})
    first = run_segment(config)
    assert first.exit_code == 0 and not first.report().warnings
    ws = Workspace(root)
    rows = read_partition(ws.tiles, "s1", TILES)
    write_partition(rows, ws.tiles, "s1", TILES, provenance={"slide": "s1", "scan": "new"})
    again = run_segment(config)
    assert again.tiles_done == [] and again.rescanned_slides == ["s1"]
    warning = " ".join(again.report().warnings)
    assert "s1" in warning and PROJECT in warning and "changed since" in warning
    consensus = run_consensus(config)
    assert consensus.exit_code == 0 and consensus.rescanned_slides == ["s1"]
    assert "s1" in " ".join(consensus.report().warnings)


def test_a_tile_in_two_campaigns_keeps_each_campaigns_masks(
    segment_workspace: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, truth = segment_workspace
    config = load_config(root, environ={})
    ws = Workspace(root)
    tile = next(iter(truth))
    pixels = decode_png(ws.campaign(PROJECT).image_path(tile).read_bytes())
    export_tiles(root, "p2", {tile: pixels}, annotators=["carol"])
    click = {
        "annotation_id": [900],
        "tile_id": [tile],
        "annotator": ["carol"],
        "x": [20.0],
        "y": [20.0],
    }
    write_points(root, "p2", pd.DataFrame(click))
    with pytest.raises(UserInputError, match="several campaigns"):
        run_segment(config)
    run_segment(config, project=PROJECT)
    second = run_segment(config, project="p2")
    assert second.tiles_done == [tile]
    first = read_table(ws.campaign(PROJECT).masks, MASKS)
    other = read_table(ws.campaign("p2").masks, MASKS)
    assert set(first["annotator"]) == {"alice", "bob"} and list(other["annotator"]) == ["carol"]


def test_nuclick_stage_and_cli(
    segment_workspace: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    root, truth = segment_workspace
    ckpt = tmp_path / "tiny.pt"
    save_model(ckpt, NuClick(width=0.0625), Checkpoint(width=0.0625, patch_size=64))
    code = cli_main(
        [
            "segment",
            "-w",
            str(root),
            "--segmenter",
            "nuclick",
            "--checkpoint",
            str(ckpt),
            "--batch-size",
            "16",
            "--no-prefect",
        ]
    )
    assert code == 0
    masks = read_table(Workspace(root).campaign(PROJECT).masks, MASKS)
    assert set(masks["segmenter"]) == {"nuclick"} and len(masks) == sum(
        2 * m.max() for m in truth.values()
    )
    # an untrained network gives anything; every click still has a polygon
    assert shapely.from_wkb(masks["polygon"].to_numpy()).tolist() and (masks["area"] > 0).all()
    assert cli_main(["segment", "-w", str(root), "--segmenter", "nuclick", "--no-prefect"]) == 2


def test_make_segmenter_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="needs weights"):
        make_segmenter("nuclick")
    with pytest.raises(UserInputError, match="unknown segmenter"):
        make_segmenter("cellpose")
    state = NuClick(width=0.0625).state_dict()
    del state["conv_transpose_1.weight"]
    import torch

    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(UserInputError, match=r"conv_transpose_1\.weight"):
        make_segmenter("nuclick", tmp_path / "broken.pt")
    assert make_segmenter("auto").name == "watershed"


def test_segment_points_rescales_to_the_segmenter_resolution() -> None:
    sample = toy_sample(np.random.default_rng(5), size=SIZE, n_nuclei=6)
    pts = _centroids(sample.inst_map)
    seg = make_segmenter("watershed")
    native = segment_points(sample.image, pts, segmenter=seg)
    # the same tissue read at 20x: half the pixels; outlines come back in its own pixels
    half = sample.image[::2, ::2]
    low = segment_points(half, pts / 2, segmenter=seg, mpp=0.5)
    assert low.instance_map.shape == (SIZE // 2, SIZE // 2)
    for a, b in zip(native.polygons, low.polygons, strict=True):
        assert b.area == pytest.approx(a.area / 4, rel=0.35)
    with pytest.raises(UserInputError, match="outside"):
        segment_points(sample.image, np.array([[SIZE + 1.0, 3.0]]), segmenter=seg)
