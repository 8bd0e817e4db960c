"""Data parallel training on the CPU: 2 gloo processes, joined as torchrun would (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), hold identical weights after their steps, and
the weights equal those of one process accumulating the same global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from histocurate.cellvit.distributed import DistContext, init_distributed, shutdown
from tests.test_train_loop import settings, trainer
from tests.test_train_units import one_thread

__all__ = ["one_thread"]  # the fixture, shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, folder: str, port: int) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    assert ctx.backend == "gloo" and ctx.world_size == 2 and ctx.rank == rank
    t = trainer(Path(folder) / "ddp", settings(epochs=1, augment=False), ctx=ctx)
    t.fit()
    params = {k: v.detach() for k, v in t.model.named_parameters()}
    torch.save(params, Path(folder) / f"rank{rank}.pt")
    shutdown(ctx)


@pytest.mark.usefixtures("one_thread")
def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path), _free_port()), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # identical on both
    # one process, micro-batches of 2 accumulated into the global batch of 4 (2 ranks x 2)
    alone = trainer(tmp_path / "one", settings(epochs=1, augment=False, micro_batch=2))
    assert alone.accum == 2 and alone.ctx == DistContext()
    alone.fit()
    single = dict(alone.model.named_parameters())
    start = trainer(tmp_path / "start", settings(epochs=1, augment=False)).model
    moved = [k for k, v in start.named_parameters() if not torch.equal(v, single[k])]
    assert len(moved) > len(single) // 2  # the steps moved the weights: the check can fail
    worst = max(float((ranks[0][k] - single[k].detach()).abs().max()) for k in single)
    assert worst < 1e-6, f"DDP and one process differ by {worst}"
