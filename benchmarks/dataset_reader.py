"""`NucleiDataset` speed: 448 px tiles decoded per second, per core and with loader workers.

Reads a dataset version (``--dataset``: a version folder, e.g. the one
``benchmarks/dataset_build.py`` leaves), or builds a small synthetic one (``--tiles``,
448 px at 0.25 um/px, 77 nuclei each). Measured in one process with one torch thread: the
time per item split into the row-group read, the RGB PNG decode and the two map decodes,
in random order (what a shuffled training epoch does); then a DataLoader with worker
processes (batch 16), end to end.

    python benchmarks/dataset_reader.py [--dataset DIR] [--tiles 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def small_dataset(n_tiles: int) -> Path:
    from histocurate.config import load_config
    from histocurate.dataset.build import run_dataset_build
    from histocurate.dataset.run import parallel_mapper
    from histocurate.dataset.synthetic import SyntheticTile, write_campaign

    root = Path(tempfile.mkdtemp(prefix="reader-bench-")) / "ws"
    labels = ["lymphocyte", "cancer_cell", "fibroblast"] * 25 + ["eosinophil"] * 2
    tiles = [
        SyntheticTile(f"t{k:04d}", f"s{k // 10:03d}", side=448, spacing=45, labels=labels, seed=k)
        for k in range(n_tiles)
    ]
    with parallel_mapper(2) as mapper:
        write_campaign(root, tiles, consensus=False, mapper=mapper)
    run = run_dataset_build(load_config(root), name="bench", source="masks")
    assert run.path is not None
    return run.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from histocurate.dataset.maps import decode_map, decode_rgb
    from histocurate.dataset.reader import PIXEL_COLUMNS, NucleiDataset

    torch.set_num_threads(1)
    path = args.dataset or small_dataset(args.tiles)
    data = NucleiDataset(path)
    sizes = data.meta[["width", "height"]].drop_duplicates().values.tolist()
    order = np.random.default_rng(0).permutation(len(data))
    handle = data._file()
    read = image = maps = 0.0
    for k in order:
        start = time.perf_counter()
        table = handle.read_row_group(int(data._groups[data.rows[k]]), columns=PIXEL_COLUMNS)
        t1 = time.perf_counter()
        decode_rgb(table.column("image")[0].as_py())
        t2 = time.perf_counter()
        decode_map(table.column("inst_map")[0].as_py())
        decode_map(table.column("type_map")[0].as_py())
        t3 = time.perf_counter()
        read, image, maps = read + t1 - start, image + t2 - t1, maps + t3 - t2
    items = []
    for k in order:
        start = time.perf_counter()
        data[int(k)]
        items.append(time.perf_counter() - start)
    whole, median = float(np.sum(items)), float(np.median(items))
    n = len(data)
    print(f"dataset {path} ({n} tiles, sizes {sizes})")
    header = f"{'per item, ms':<28} {'read':>6} {'image':>6} {'maps':>6} {'item':>6}"
    print(f"{header} {'tiles/s/core':>13} {'median item':>12}")
    parts = f"{1e3 * read / n:>6.2f} {1e3 * image / n:>6.2f} {1e3 * maps / n:>6.2f}"
    print(
        f"{'one process, 1 thread':<28} {parts} {1e3 * whole / n:>6.2f} {n / whole:>13.0f} "
        f"{1e3 * median:>9.2f} ms"
    )
    for workers in sorted({0, args.workers}):
        loader = DataLoader(data, batch_size=16, shuffle=True, num_workers=workers)
        start = time.perf_counter()
        seen = sum(len(batch["tile_id"]) for batch in loader)
        seconds = time.perf_counter() - start
        print(
            f"DataLoader, {workers} worker(s), batch 16: {seen / seconds:.0f} tiles/s "
            f"({seconds:.1f} s for {seen}, worker start-up included)"
        )


if __name__ == "__main__":
    main()
