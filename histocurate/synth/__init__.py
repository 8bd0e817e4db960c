"""The built-in synthetic cohort: H&E-like pyramidal slides with known nuclei.

`generate_cohort` writes slides (pyramidal TIFF that OpenSlide opens as Aperio, mpp 0.25)
and their ground truth (table ``truth``); `truth_in_tiles` maps the truth into tiles;
`write_benchmark_slide` writes one very large slide quickly for the tiling benchmark.
"""

from histocurate.synth.benchmark_slide import write_benchmark_slide
from histocurate.synth.cohort import (
    MANIFEST_COLUMNS,
    SyntheticSlide,
    generate_cohort,
    generate_slide,
    manifest_text,
    write_manifest,
)
from histocurate.synth.truth import TRUTH_IN_TILES_COLUMNS, cell_polygons, truth_in_tiles

__all__ = [
    "MANIFEST_COLUMNS",
    "TRUTH_IN_TILES_COLUMNS",
    "SyntheticSlide",
    "cell_polygons",
    "generate_cohort",
    "generate_slide",
    "manifest_text",
    "truth_in_tiles",
    "write_benchmark_slide",
    "write_manifest",
]
