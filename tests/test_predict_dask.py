"""Post-processing on a Dask cluster (``[predict] dask_address``): the same nuclei as on this
machine, and the client it opens is closed when the run ends, also when the run fails.

One in-process `distributed.LocalCluster` (one worker, one thread, TCP so that the jobs
and their nuclei are pickled as on a real cluster) serves the module; the `OracleModel`
(dark blobs are nuclei) stands in for a trained CellViT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from data_schema import CELLS
from histocurate.cli.app import main
from histocurate.config import HistocurateConfig, load_config
from histocurate.errors import UserInputError
from histocurate.io import read_table
from histocurate.predict import slide as slide_module
from histocurate.predict import stage as stage_module
from histocurate.predict.engine import Engine
from histocurate.predict.stage import run_predict
from histocurate.predict.store import SlidePredictions
from histocurate.predict.worker import DaskExecutor, Placement, WindowCells, executor_for
from histocurate.testing.predict_data import oracle_loader, tiny_checkpoint
from histocurate.tiling import run_tile
from tests.slide_files import tissue_image, write_slide

distributed = pytest.importorskip("distributed")

# discs (x, y) on the slide's tissue (384..1152), some on window core borders (768)
DISCS = [(500, 500), (768, 600), (700, 768), (768, 768), (1000, 450), (600, 1050)]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        processes=False,
        n_workers=1,
        threads_per_worker=1,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as running:
        yield running


def clients(cluster: Any) -> set[str]:
    """The clients the scheduler holds, less its own (``fire-and-forget``)."""
    return set(cluster.scheduler.clients) - {"fire-and-forget"}


def oracle_items(n: int = 6) -> list[tuple[int, np.ndarray, Placement]]:
    """Images of dark discs, with placements of every kind (offset, scaled, cropped)."""
    rng = np.random.default_rng(0)
    items = []
    for k in range(n):
        rgb = np.full((112, 112, 3), 220, np.uint8)
        rr, cc = np.mgrid[0:112, 0:112]
        for x, y in rng.uniform(10, 100, size=(3, 2)):
            rgb[(cc - x) ** 2 + (rr - y) ** 2 <= 36] = (60, 30, 90)
        placement = [
            Placement(),
            Placement((1000.0, 2000.0), (1.0, 1.0)),
            Placement((0.0, 0.0), (2.0, 2.0)),
            Placement((5.0, 7.0), (2.0, 1.5), crop=(98, 84)),
        ][k % 4]
        items.append((k, rgb, placement))
    return items


def run_engine(executor: Executor) -> list[WindowCells]:
    loaded = oracle_loader()(Path("oracle.pt"))
    engine = Engine(loaded, executor=executor, batch_size=4, mpp=0.25)
    return list(engine.run(oracle_items()))


def assert_same(got: list[WindowCells], want: list[WindowCells]) -> None:
    assert [p.key for p in got] == [p.key for p in want]
    for a, b in zip(got, want, strict=True):
        assert len(a) == len(b) and a.error == b.error
        for name in ("x", "y", "bbox", "touch", "area", "type_index", "confidence", "probs"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.wkb.tolist() == b.wkb.tolist()


def test_fan_out_on_dask_gives_the_local_nuclei_and_closes_its_client(cluster: Any) -> None:
    local = run_engine(executor_for(0))
    assert sum(len(p) for p in local) >= 12  # three discs per image, some cut by a crop
    executor = executor_for(None, cluster.scheduler_address)
    assert isinstance(executor, DaskExecutor) and clients(cluster) == {executor.client.id}
    try:
        assert_same(run_engine(executor), local)
    finally:
        executor.shutdown()
    assert executor.client.status == "closed" and not clients(cluster)


def disc_workspace(root: Path, tile_config: Callable[[Path], HistocurateConfig]) -> Path:
    """A workspace of one 1536 px slide holding the ``DISCS`` nuclei, tiled with
    ``tile_config(root)``, and the oracle checkpoint ``oracle.pt`` (also the Prefect Dask
    test's)."""
    assert main(["init", str(root)]) == 0
    rgb = tissue_image(1536, 1536, seed=5)
    rr, cc = np.mgrid[0:1536, 0:1536]
    for x, y in DISCS:
        rgb[(cc + 0.5 - x) ** 2 + (rr + 0.5 - y) ** 2 <= 49] = (60, 30, 90)
    write_slide(root / "d.tiff", rgb, mpp=0.25)
    (root / "slides.csv").write_text("slide_id,path,indication\nd,d.tiff,LUAD\n")
    assert not run_tile(tile_config(root)).failed
    tiny_checkpoint(root / "oracle.pt")
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return disc_workspace(tmp_path_factory.mktemp("predict_dask") / "ws", config)


def config(ws: Path, **predict: object) -> HistocurateConfig:
    extra = {"window_um": 112, "margin_um": 8, "workers": 0, "batch_size": 4, **predict}
    return load_config(ws, {"tiling": {"tile_size_um": 56}, "predict": extra}, environ={})


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Executor]:
    """The oracle for every model load; the executors the predict runs open, recorded."""
    load = oracle_loader()
    monkeypatch.setattr(slide_module, "load_model", load)
    monkeypatch.setattr(stage_module, "load_model", load)
    made: list[Executor] = []

    def recording(workers: int | None, dask_address: str | None = None) -> Executor:
        made.append(executor_for(workers, dask_address))
        return made[-1]

    monkeypatch.setattr(slide_module, "executor_for", recording)
    return made


def cells_of(ws: Path) -> pd.DataFrame:
    return read_table(SlidePredictions(ws, "oracle").cells("d"), CELLS)


def test_a_predict_run_on_dask_writes_the_local_cells_and_closes_its_client(
    ws: Path, cluster: Any, opened: list[Executor]
) -> None:
    local = run_predict(config(ws), checkpoint="oracle.pt", force=True)
    assert [o.status for o in local.outcomes] == ["done"], local.failure_lines()
    want = cells_of(ws)
    assert len(want) == len(DISCS)
    on_dask = run_predict(config(ws, dask_address=cluster.scheduler_address),
                          checkpoint="oracle.pt", force=True)  # fmt: skip
    assert [o.status for o in on_dask.outcomes] == ["done"], on_dask.failure_lines()
    pd.testing.assert_frame_equal(cells_of(ws), want)
    (dask,) = [e for e in opened if isinstance(e, DaskExecutor)]
    assert dask.client.status == "closed" and not clients(cluster)
    assert not slide_module._EXECUTORS  # the next run opens its own


def test_a_run_stopped_by_an_error_closes_its_client(
    ws: Path, cluster: Any, opened: list[Executor], tmp_path: Path
) -> None:
    def stops(work: Callable[[Any], Any], items: Any) -> Iterator[Any]:
        for item in items:
            yield work(item)
            raise RuntimeError("stopped after the first slide")

    cfg = config(ws, dask_address=cluster.scheduler_address)
    with pytest.raises(RuntimeError, match="stopped after"):
        run_predict(cfg, checkpoint="oracle.pt", mapper=stops, force=True)
    (dask,) = opened
    assert isinstance(dask, DaskExecutor) and dask.client.status == "closed"
    assert not clients(cluster) and not slide_module._EXECUTORS
    # no slide to predict: the client opened before the slides are looked for is closed too
    empty = tmp_path / "empty"
    assert main(["init", str(empty)]) == 0
    with pytest.raises(UserInputError, match="no tiles"):
        run_predict(config(empty, dask_address=cluster.scheduler_address),
                    checkpoint=str(ws / "oracle.pt"))  # fmt: skip
    assert len(opened) == 2 and not clients(cluster)


def test_a_scheduler_that_does_not_answer_stops_the_run_named(
    ws: Path, opened: list[Executor]
) -> None:
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        cfg = config(ws, dask_address="tcp://127.0.0.1:9")  # the discard port: nobody there
        with pytest.raises(UserInputError, match=r"dask_address tcp://127\.0\.0\.1:9: no Dask"):
            run_predict(cfg, checkpoint="oracle.pt", force=True)
    with pytest.raises(UserInputError, match=r"tcp://127\.0\.0\.1:87x: not a Dask scheduler"):
        run_predict(config(ws, dask_address="tcp://127.0.0.1:87x"), checkpoint="oracle.pt")
    assert not slide_module._EXECUTORS and not opened
