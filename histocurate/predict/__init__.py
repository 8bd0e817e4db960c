"""Inference with a CellViT checkpoint: whole slides and dataset tiles (`histocurate predict`),
model evaluation (`histocurate evaluate --model`) and the next selection round's labels.

Modules, in the order the work flows:

- `windows`: the resolution rule and the overlapping windows over a slide's tissue tiles;
- `models`, `engine`, `worker`: a checkpoint loaded once per process, batched forward
  passes under autocast, HoVer post-processing on a pool while the device runs on;
- `stitch`: one set of nuclei per slide (owner cores, cut pieces, STRtree duplicates);
- `outputs`, `histoplus`: cells table, counts and densities, QuPath GeoJSON, thumbnail,
  the histoplus ``cell_masks.json``;
- `store`, `slide`, `dataset`, `stage`: where predictions live and when they are stale, the
  work per slide and per dataset, `run_predict`;
- `evaluate`, `evaluate_report`: `run_model_evaluation` and its Table 2 / Figure 3a;
- `labels`: predicted cells as presence labels for `histocurate select`.

Its test oracles (window views of known nuclei, a model that finds dark blobs, a tiny
random checkpoint) are in `histocurate.testing.predict_data`.
"""
