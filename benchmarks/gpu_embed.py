"""GPU embedding throughput: Phikon and H0-mini architectures, batch 256, bf16, reading included.

A prepared, standalone script for a machine with one CUDA GPU (it needs torch, timm,
transformers, numpy and Pillow; not OpenSlide nor the rest of histocurate's stack). The
models are histocurate's own encoders (`histocurate.features.phikon` / `.h0mini`) built
with random weights, so the timed code path is the production one: uint8 batch -> device,
normalise on the device, bf16 autocast forward, features back to the host.

"Reading included" is simulated faithfully without OpenSlide: a slide-like file of
256 px JPEG tiles (q=80, as scanners write) is written once; each 112 um tile at 40x
(448 px at level 0), in the order of the tile grid, is read by decoding the JPEG tiles
that cover it (`os.pread` + libjpeg through Pillow, with a per-worker cache of decoded
tiles, as OpenSlide does), cropping, and halving to 224 px in DataLoader worker processes,
exactly as the pipeline's preprocessor does.

    python benchmarks/gpu_embed.py [--batch 256] [--tiles 8192] [--workers N]

Prints, per model: model-only tiles/s (pixels already on the GPU), reading-only tiles/s
(the loader alone), and end-to-end tiles/s; plus peak GPU memory. Target: >= 2,000 tiles/s
end to end on an H100. Runs in well under 2 minutes.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from histocurate.features.base import TorchEncoder, resize_tile  # noqa: E402
from histocurate.features.h0mini import build_h0mini  # noqa: E402
from histocurate.features.phikon import build_phikon  # noqa: E402

JPEG_TILE = 256
CACHE_TILES = 512  # decoded 256 px tiles per worker (~100 MB), like OpenSlide's cache
TILE_PX = 448  # 112 um at 0.25 um/px
HEADER = struct.Struct("<III")  # grid side, jpeg tile side, number of tiles


def _he_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A pink image with dark purple blobs: JPEG-compresses like H&E, not like noise."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = (230, 160, 200)
    img += rng.normal(0, 6, (size, size, 1))
    yy, xx = np.mgrid[:size, :size]
    for cy, cx, r in zip(*rng.integers(0, size, (2, 60)), rng.integers(4, 9, 60), strict=True):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (90, 50, 150)
    return img.clip(0, 255).astype(np.uint8)


def write_slide(path: Path, grid: int, seed: int = 0) -> Path:
    """A grid x grid store of distinct 256 px JPEG tiles with an offset table."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(48):
        buffer = io.BytesIO()
        Image.fromarray(_he_like(rng, JPEG_TILE)).save(buffer, "JPEG", quality=80)
        pool.append(buffer.getvalue())
    n = grid * grid
    order = rng.integers(0, len(pool), n)
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(pool[i]) for i in order])
    base = HEADER.size + offsets.nbytes
    with open(path, "wb") as handle:
        handle.write(HEADER.pack(grid, JPEG_TILE, n))
        handle.write((offsets + base).tobytes())
        for i in order:
            handle.write(pool[i])
    return path


class SlideRegions(Dataset[torch.Tensor]):
    """The slide's 448 px tile grid in row-major order (as the tiles table lists it),
    decoded from the JPEG store and halved to 224 px (the pipeline's preprocessing) in the
    worker. Decoded JPEG tiles are kept in a small per-worker cache, as OpenSlide does,
    so neighbouring tiles of one batch share their border JPEG tiles."""

    def __init__(self, path: Path, n: int, out_px: int) -> None:
        self.path, self.out_px = path, out_px
        with open(path, "rb") as handle:
            grid, side, count = HEADER.unpack(handle.read(HEADER.size))
            self.offsets = np.frombuffer(handle.read(8 * (count + 1)), np.int64)
        self.grid, self.side = grid, side
        per_row = grid * side // TILE_PX
        k = np.arange(n) % (per_row * per_row)
        self.positions = np.stack([k // per_row, k % per_row], axis=1) * TILE_PX
        self._fd: int | None = None
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.positions)

    def _jpeg(self, ty: int, tx: int) -> np.ndarray:
        found = self._cache.get((ty, tx))
        if found is not None:
            self._cache.move_to_end((ty, tx))
            return found
        if self._fd is None:  # opened in each worker process, like a slide handle
            self._fd = os.open(self.path, os.O_RDONLY)
        k = ty * self.grid + tx
        start, end = int(self.offsets[k]), int(self.offsets[k + 1])
        data = os.pread(self._fd, end - start, start)
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        self._cache[(ty, tx)] = pixels
        if len(self._cache) > CACHE_TILES:
            self._cache.popitem(last=False)
        return pixels

    def __getitem__(self, index: int) -> torch.Tensor:
        y, x = (int(v) for v in self.positions[index])
        t0y, t0x = y // self.side, x // self.side
        t1y, t1x = (y + TILE_PX - 1) // self.side, (x + TILE_PX - 1) // self.side
        rows = [
            np.concatenate([self._jpeg(ty, tx) for tx in range(t0x, t1x + 1)], axis=1)
            for ty in range(t0y, t1y + 1)
        ]
        canvas = np.concatenate(rows, axis=0)
        oy, ox = y - t0y * self.side, x - t0x * self.side
        tile = np.ascontiguousarray(canvas[oy : oy + TILE_PX, ox : ox + TILE_PX])
        small = resize_tile(tile, self.out_px)
        return torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def loader(dataset: Dataset[torch.Tensor], batch: int, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=2,  # batches in flight: workers x 2 x 256 x 150 KB of shared memory
        worker_init_fn=_worker_init,
        persistent_workers=False,
    )


def reset_peak(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_gib(cuda: bool) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0


def model_only(encoder: TorchEncoder, batch: int, iters: int) -> float:
    x = torch.randint(0, 256, (batch, 3, encoder.input_px, encoder.input_px), dtype=torch.uint8)
    x = x.to(encoder.device)
    for _ in range(3):
        encoder.encode(x)  # warm-up (cuDNN/cuBLAS heuristics, allocator)
    start = time.perf_counter()
    for _ in range(iters):
        encoder.encode(x)  # returns host numpy: includes the copy back and a sync
    return batch * iters / (time.perf_counter() - start)


def end_to_end(encoder: TorchEncoder | None, data: DataLoader) -> tuple[float, float, int]:
    """(tiles/s overall incl. worker start, tiles/s after the first batch, tiles)."""
    start = time.perf_counter()
    first = None
    n = 0
    for batch in data:
        if encoder is not None:
            encoder.encode(batch)
        n += len(batch)
        if first is None:
            first, n_first = time.perf_counter(), n
    end = time.perf_counter()
    steady = (n - n_first) / (end - first) if first is not None and end > first else float("nan")
    return n / (end - start), steady, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=8192, help="tiles read per end-to-end run")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--iters", type=int, default=10, help="timed model-only batches")
    parser.add_argument("--slide", type=Path, default=Path("/tmp/histocurate_gpu_slide.bin"))
    parser.add_argument("--dry-run", action="store_true", help="tiny run on CPU (checks only)")
    args = parser.parse_args()
    device, precision = "cuda", "bf16"
    if args.dry_run:
        device, precision = "cpu", "fp32"
        args.batch, args.tiles, args.iters, args.workers = 4, 8, 1, min(args.workers, 2)
    elif not torch.cuda.is_available():
        print("no CUDA GPU visible: this benchmark needs one", file=sys.stderr)
        return 2
    cuda = device == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(0) if cuda else "cpu (dry run)"
    print(f"device: {name}; torch {torch.__version__}; {os.cpu_count()} CPUs; "
          f"{args.workers} loader workers; batch {args.batch}; {precision}")  # fmt: skip
    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    if shm is not None:
        print(f"/dev/shm free: {shm.f_bavail * shm.f_frsize / 2**30:.1f} GiB (loader batches)")
    t0 = time.perf_counter()
    write_slide(args.slide, grid=160)  # 40960 px square at 0.25 um/px: 8281 tiles of 448
    print(f"slide store written in {time.perf_counter() - t0:.1f} s "
          f"({args.slide.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
    common = {"weights": None, "hf_cache": None, "device": device, "precision": precision,
              "random_weights": True}  # fmt: skip
    encoders: list[tuple[str, TorchEncoder]] = [
        ("phikon (ViT-B/16)", build_phikon(**common)),  # type: ignore[arg-type]
        ("h0-mini (ViT-B/14+reg4, SwiGLU)", build_h0mini(**common)),  # type: ignore[arg-type]
    ]
    rows = []
    read = loader(SlideRegions(args.slide, args.tiles, 224), args.batch, args.workers)
    overall, steady, n = end_to_end(None, read)
    rows.append(("(reading only)", "loader", n, overall, steady, 0.0))
    for label, encoder in encoders:
        attn = getattr(getattr(encoder.model, "config", None), "_attn_implementation", "sdpa")
        reset_peak(cuda)
        rate = model_only(encoder, args.batch, args.iters)
        rows.append((f"{label} [{attn}]", "model only", args.batch * args.iters, rate, rate,
                     peak_gib(cuda)))  # fmt: skip
        reset_peak(cuda)
        data = loader(SlideRegions(args.slide, args.tiles, encoder.input_px), args.batch,
                      args.workers)  # fmt: skip
        overall, steady, n = end_to_end(encoder, data)
        rows.append((label, "end to end", n, overall, steady, peak_gib(cuda)))
    print()
    print("| model | what | tiles | tiles/s (all) | tiles/s (after 1st batch) | peak GPU GiB |")
    print("|---|---|---|---|---|---|")
    for label, what, n, overall, steady, mem in rows:
        print(f"| {label} | {what} | {n} | {overall:.0f} | {steady:.0f} | {mem:.1f} |")
    print(
        "\ntarget: >= 2000 tiles/s end to end. If end to end is far below model only and "
        "close to reading only, the CPU (JPEG decoding) is the limit: add loader workers."
    )
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
