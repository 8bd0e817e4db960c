"""Output files of a slide's prediction: types, QuPath GeoJSON, histoplus cell_masks.json,
counts and densities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from openslide.deepzoom import DeepZoomGenerator

from histocurate.predict.histoplus import cell_masks_json, deepzoom_frame
from histocurate.predict.outputs import (
    class_labels,
    counts_table,
    display,
    tissue_mm2,
    write_geojson,
)
from histocurate.slides import open_slide
from tests.slide_files import tissue_image, write_slide


def test_model_classes_map_to_the_ontology() -> None:
    histoplus = ["Cancer cell", "Lymphocytes", "Muscle Cell", "Mitotic Figures",
                 "Minor Stromal Cell"]  # fmt: skip
    assert class_labels(histoplus) == [None, "cancer_cell", "lymphocyte", "smooth_muscle_cell",
                                       "mitotic_figure", "Minor Stromal Cell"]  # fmt: skip
    assert class_labels(["Red blood cell", "inflammatory", "eosinophil"]) == [
        None, "red_blood_cell", "inflammatory", "eosinophil",
    ]  # fmt: skip
    assert display("eosinophil") == ("Eosinophil", "#f58231")
    assert display("Minor Stromal Cell", {"Minor Stromal Cell": "#123456"}) == (
        "Minor Stromal Cell", "#123456",
    )  # fmt: skip
    assert display(None)[0] == "Unclassified nucleus"


def cells_frame() -> pd.DataFrame:
    boxes = [shapely.box(500, 600, 510, 610), shapely.box(1396, 40, 1404, 52)]
    return pd.DataFrame({
        "slide_id": "s", "cell_id": [1, 2], "tile_id": ["s_x448_y448", "s_x1344_y0"],
        "x": [505.0, 1400.0], "y": [605.0, 46.0],
        "polygon": [shapely.to_wkb(b) for b in boxes], "area_um2": [6.25, 6.0],
        "label": ["cancer_cell", None], "type_index": [1, 0],
        "confidence": [0.9, 0.4], "probabilities": [[0.1, 0.9], [0.6, 0.4]], "window": [0, 1],
    })  # fmt: skip


def test_geojson_is_qupath_detections(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "s.geojson", cells_frame(), {})
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    first, second = data["features"]
    assert first["properties"]["classification"] == {"name": "Cancer cell",
                                                      "color": [230, 25, 75]}  # fmt: skip
    assert first["properties"]["objectType"] == "detection" and first["id"] == "cell-1"
    assert shapely.from_geojson(json.dumps(first["geometry"])).equals(
        shapely.box(500, 600, 510, 610)
    )
    assert second["properties"]["classification"]["name"] == "Unclassified nucleus"
    assert second["properties"]["measurements"] == {"confidence": 0.4, "area um2": 6.0}


def test_cell_masks_follow_a_real_deepzoom_pyramid(tmp_path: Path) -> None:
    slide_path = write_slide(tmp_path / "s.tiff", tissue_image(1100, 1500), mpp=0.25)  # 1500 x 1100
    slide = open_slide(slide_path)
    dz = DeepZoomGenerator(slide, tile_size=224, overlap=0, limit_bounds=False)
    frame = deepzoom_frame(1500, 1100, mpp=0.25)
    assert dz.level_count - 1 - frame.level == 1  # one level above full resolution: 0.5 um/px
    assert dz.level_dimensions[frame.level] == (frame.width, frame.height)
    text = cell_masks_json(cells_frame(), class_names=["Cancer cell"], width=1500, height=1100,
                           mpp=0.25, model_name="m", inference_mpp=0.25)  # fmt: skip
    data = json.loads(text)
    assert data["model_name"] == "m" and data["inference_mpp"] == 0.25
    by_tile = {(t["x"], t["y"]): t for t in data["cell_masks"]}
    assert set(by_tile) == {(1.0, 1.0), (3.0, 0.0)}
    tile = by_tile[1.0, 1.0]
    col, row = int(tile["x"]), int(tile["y"])
    # the tile's place and size are DeepZoom's own
    assert dz.get_tile_coordinates(frame.level, (col, row))[0] == (col * 448, row * 448)
    assert (tile["width"], tile["height"]) == dz.get_tile_dimensions(frame.level, (col, row))
    mask = tile["masks"][0]
    assert mask["cell_id"] == 1.0 and isinstance(mask["cell_id"], float)
    assert mask["cell_type"] == "Cancer cell" and mask["confidence"] == 0.9
    assert mask["centroid"] == [505 / 2 - 224, 605 / 2 - 224]
    assert [250.0 - 224, 300.0 - 224] in mask["coordinates"]
    edge = by_tile[3.0, 0.0]
    assert edge["width"] == dz.get_tile_dimensions(frame.level, (3, 0))[0] < 224
    assert edge["masks"][0]["cell_type"] == "Background"
    slide.close()


def test_counts_and_densities() -> None:
    tiles = pd.DataFrame({"size_level0": [448, 448], "mpp": [0.25, 0.25],
                          "tissue_fraction": [1.0, 0.5]})  # fmt: skip
    tissue = tissue_mm2(tiles)
    assert tissue == pytest.approx(0.112**2 * 1.5)
    labels = pd.Series(["cancer_cell", "cancer_cell", "eosinophil", None])
    counts = counts_table("s", labels, tissue).set_index("label")
    assert counts.loc["all", "count"] == 4 and counts.loc["untyped", "count"] == 1
    assert counts.loc["cancer_cell", "share"] == 0.5
    assert counts.loc["eosinophil", "density_per_mm2"] == pytest.approx(1 / tissue)
    empty = counts_table("s", pd.Series([], dtype=object), tissue)
    assert empty["count"].tolist() == [0] and np.isfinite(empty["density_per_mm2"]).all()
