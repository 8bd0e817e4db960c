"""Bad input to `dataset build`: one clear line naming the file, row or key and the fix;
nothing already written is changed by a failed build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from data_schema import CONSENSUS, MASKS, TableSchema
from histocurate.dataset.store import datasets_root
from histocurate.errors import UserInputError
from histocurate.io import read_provenance, read_table
from histocurate.io.tables import PROVENANCE_KEY
from histocurate.workspace import Workspace
from tests.test_dataset_build import build, make_workspace


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("errors") / "ws"
    make_workspace(root)
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(base, copy)
    return copy


def write_unchecked(frame: pd.DataFrame, path: Path, schema: TableSchema, provenance: dict) -> None:
    """A table with the schema's stamp but values the writer would refuse (hand-edited)."""
    table = pa.Table.from_pandas(frame, schema=schema.to_arrow(), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(provenance).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def edit_masks(ws: Path, tile: str, **changes: object) -> Path:
    """Change row 0 of a tile's masks (keeping its provenance)."""
    path = Workspace(ws.resolve()).campaign("camp").masks / f"{tile}.parquet"
    frame = read_table(path, MASKS)
    for column, value in changes.items():
        frame.at[0, column] = value
    write_unchecked(frame, path, MASKS, read_provenance(path))
    return path


def refresh_consensus_stamp(ws: Path) -> None:
    """What a consensus re-run would stamp (the edited masks are then current)."""
    from histocurate.dataset.inputs import campaign_masks_token

    campaign = Workspace(ws.resolve()).campaign("camp")
    frame = read_table(campaign.consensus, CONSENSUS)
    write_unchecked(frame, campaign.consensus, CONSENSUS, {"masks": campaign_masks_token(campaign)})


def one_line_error(ws: Path, match: str, **kwargs: object) -> str:
    with pytest.raises(UserInputError, match=match) as info:
        build(ws, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_stale_consensus_names_the_command(ws: Path) -> None:
    path = Workspace(ws.resolve()).campaign("camp").masks / "s1_t0.parquet"
    frame = read_table(path, MASKS)
    write_unchecked(frame, path, MASKS, {**read_provenance(path), "segmenter": "nuclick"})
    message = one_line_error(ws, "older than the masks", source="consensus")
    assert "consensus.parquet" in message and "histocurate consensus --project camp" in message


def test_consensus_without_a_masks_stamp_is_refused(ws: Path) -> None:
    campaign = Workspace(ws.resolve()).campaign("camp")
    write_unchecked(read_table(campaign.consensus, CONSENSUS), campaign.consensus, CONSENSUS, {})
    one_line_error(ws, "does not record which masks", source="consensus")


def test_masks_drawn_on_other_pixels_are_refused(ws: Path) -> None:
    path = Workspace(ws.resolve()).campaign("camp").masks / "s0_t0.parquet"
    write_unchecked(
        read_table(path, MASKS), path, MASKS, {**read_provenance(path), "pixels": "0" * 64}
    )
    message = one_line_error(ws, "other pixels")
    assert "s0_t0.parquet" in message and "histocurate segment --project camp" in message


def test_a_missing_image_is_named_and_the_other_tiles_are_built(ws: Path) -> None:
    campaign = Workspace(ws.resolve()).campaign("camp")
    campaign.image_path("s0_t0").unlink()
    campaign.image_path("s2_t1").write_bytes(b"not the exported image")
    run = build(ws)
    assert run.status == "built" and run.exit_code == 2
    failed = {o.item: o.error for o in run.failed}
    assert set(failed) == {"s0_t0", "s2_t1"}
    assert "missing" in str(failed["s0_t0"]) and "histocurate export --project camp" in str(
        failed["s0_t0"]
    )
    assert "not the image exported" in str(failed["s2_t1"])
    assert run.info["counts"]["tiles"] == 11
    left = {item["tile_id"] for item in run.info["left_out"]}
    assert {"s0_t0", "s2_t1"} <= left


def test_a_gone_slide_file_does_not_stop_the_build(ws: Path) -> None:
    from data_schema import TILES
    from histocurate.io import write_partition

    tiles = Workspace(ws.resolve()).tiles
    frame = read_table(tiles / "s0.parquet", TILES)
    write_partition(frame.assign(slide_path=str(ws / "moved" / "s0.tiff")), tiles, "s0", TILES)
    run = build(ws)
    assert run.status == "built" and run.exit_code == 0
    assert run.info["counts"]["tiles"] == 13
    assert any("s0" in w and "frozen images" in w for w in run.warnings)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"polygon": shapely.to_wkb(shapely.Point(5, 5))}, "not a polygon"),
        ({"polygon": b"\x01\x02junk"}, "not valid WKB"),
        ({"polygon": shapely.to_wkb(shapely.box(500, 500, 520, 520))}, "outside its tile"),
        ({"label": "tumour"}, "'tumour' is not in the ontology"),
    ],
    ids=["not-a-polygon", "not-wkb", "outside", "label"],
)
def test_bad_mask_rows_name_file_and_row(ws: Path, change: dict, match: str) -> None:
    path = edit_masks(ws, "s0_t0", **change)
    message = one_line_error(ws, match)
    assert str(path) in message and "row 0" in message and "tile s0_t0" in message
    assert "histocurate segment --project camp" in message


def test_duplicate_nucleus_rows_are_refused(ws: Path) -> None:
    masks = Workspace(ws.resolve()).campaign("camp").masks
    other = read_table(masks / "s2_t0.parquet", MASKS)
    edit_masks(ws, "s0_t0", annotation_id=int(other["annotation_id"].iloc[0]))
    one_line_error(ws, "duplicate nucleus row")


def test_bad_consensus_rows_name_the_consensus_file(ws: Path) -> None:
    campaign = Workspace(ws.resolve()).campaign("camp")
    frame = read_table(campaign.consensus, CONSENSUS)
    frame.at[3, "label"] = "tumour"
    write_unchecked(frame, campaign.consensus, CONSENSUS, read_provenance(campaign.consensus))
    message = one_line_error(ws, "not in the ontology", source="consensus")
    assert "consensus.parquet: row 3" in message
    frame = read_table(campaign.consensus, CONSENSUS)
    frame.at[3, "label"] = frame.at[2, "label"]
    frame.at[3, "consensus_id"] = frame.at[2, "consensus_id"]
    write_unchecked(frame, campaign.consensus, CONSENSUS, read_provenance(campaign.consensus))
    one_line_error(ws, "duplicate nucleus row", source="consensus")


def test_an_empty_campaign_says_why(ws: Path) -> None:
    masks = Workspace(ws.resolve()).campaign("camp").masks
    for path in masks.glob("*.parquet"):
        path.unlink()
    message = one_line_error(ws, "has no masks")
    assert "histocurate segment --project camp" in message


def test_consensus_source_without_multi_annotator_tiles(ws: Path) -> None:
    masks = Workspace(ws.resolve()).campaign("camp").masks
    for tile in ("s1_t0", "s1_t1", "s3_t0", "s3_t1", "s5_t0", "s5_t1"):
        (masks / f"{tile}.parquet").unlink()
    refresh_consensus_stamp(ws)
    one_line_error(ws, "no tile has two annotators", source="consensus")


def test_several_annotators_without_consensus_under_masks(ws: Path) -> None:
    Workspace(ws.resolve()).campaign("camp").consensus.unlink()
    message = one_line_error(ws, "annotated by several annotators")
    assert "s1_t0" in message and "histocurate consensus --project camp" in message


def test_an_unknown_campaign_lists_the_known_ones(ws: Path) -> None:
    one_line_error(ws, "projects there: camp", project="other")


def test_a_failed_build_changes_nothing_already_written(ws: Path) -> None:
    first = build(ws)
    assert first.path is not None
    before = {
        p: p.read_bytes() for p in sorted(datasets_root(ws.resolve()).rglob("*")) if p.is_file()
    }
    edit_masks(ws, "s0_t0", label="tumour")
    one_line_error(ws, "not in the ontology")
    edit_masks(ws, "s0_t0", label="lymphocyte", polygon=b"junk")
    one_line_error(ws, "not valid WKB")
    after = {
        p: p.read_bytes() for p in sorted(datasets_root(ws.resolve()).rglob("*")) if p.is_file()
    }
    assert after == before
    assert [p.name for p in (datasets_root(ws.resolve()) / "ds").iterdir()] == [first.version]


def add_click(ws: Path, tile: str, annotation_id: int) -> None:
    """A new click on ``tile`` after the consensus was made (what import + segment leave)."""
    from data_schema import ASSIGNMENTS
    from histocurate.io import write_partition
    from histocurate.segment.plan import clicks_digest, inside

    workspace = Workspace(ws.resolve())
    path = workspace.campaign("camp").masks / f"{tile}.parquet"
    frame = read_table(path, MASKS)
    extra = frame.iloc[[0]].assign(
        annotation_id=annotation_id,
        x=20.0,
        y=20.0,
        label="eosinophil",
        polygon=shapely.to_wkb(shapely.Point(20, 20).buffer(4)),
    )
    frame = pd.concat([frame, extra], ignore_index=True)
    exported = read_table(workspace.assignments, ASSIGNMENTS)
    side = int(exported.loc[exported["tile_id"] == tile, "tile_px"].iloc[0])
    provenance = {**read_provenance(path), "clicks": clicks_digest(frame[inside(frame, side)])}
    write_partition(frame, workspace.campaign("camp").masks, tile, MASKS, provenance=provenance)


def test_a_click_on_a_single_annotator_tile_keeps_the_consensus_current(ws: Path) -> None:
    add_click(ws, "s0_t0", 99999)  # s0: one annotator, not in the consensus
    run = build(ws)  # --source masks: the consensus still serves the multi-annotator tiles
    assert run.status == "built" and run.path is not None
    nuclei = pd.read_parquet(run.path / "nuclei.parquet")
    assert (nuclei["tile_id"] == "s0_t0").any() and (nuclei["source"] == "consensus").any()
    assert build(ws, source="consensus").status == "built"


def test_a_click_on_a_multi_annotator_tile_makes_the_consensus_stale(ws: Path) -> None:
    add_click(ws, "s0_t0", 99998)  # harmless on its own (see above) ...
    add_click(ws, "s1_t1", 99999)  # ... but s1 has three annotators: the consensus is stale
    message = one_line_error(ws, "older than the masks")
    assert "s1_t1" in message and "s0_t0" not in message
    assert "histocurate consensus --project camp" in message
