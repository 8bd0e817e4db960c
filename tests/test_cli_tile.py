"""The CLI end to end for init + tile: exit codes, messages, and tables left untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_schema import TILES
from histocurate.cli.app import main
from histocurate.io import read_table
from tests.slide_files import tissue_image, write_slide


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    for name in ("a", "b"):
        write_slide(ws / f"{name}.tiff", tissue_image(2048, 2048, seed=len(name)), mpp=0.25)
    (ws / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\nb,b.tiff,LUSC\n")
    return ws


def snapshot(ws: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(ws)): p.read_bytes() for p in sorted(ws.rglob("*.parquet")) if p.is_file()
    }


def test_tile_then_rerun_is_a_noop(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tile", "-w", str(workspace), "--no-prefect"]) == 0
    tiles = read_table(workspace / "tiles.parquet", TILES)
    assert sorted(tiles["slide_id"].unique()) == ["a", "b"] and len(tiles) == 8
    before = snapshot(workspace)
    assert main(["tile", "-w", str(workspace), "--no-prefect"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert snapshot(workspace)["tiles.parquet/a.parquet"] == before["tiles.parquet/a.parquet"]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("slide_id,path,indication\na,a.tiff,LUAD\na,b.tiff,LUAD\n", "duplicate slide_id"),
        ("slide_id,path,indication\na,a.tiff,NOPE\n", "unknown indication 'NOPE'"),
        ("slide_id,path,indication\n", "lists no slide"),
    ],
)
def test_bad_manifest_exits_2_and_leaves_tables_untouched(
    workspace: Path, manifest: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tile", "-w", str(workspace), "--no-prefect"]) == 0
    before = snapshot(workspace)
    (workspace / "slides.csv").write_text(manifest)
    capsys.readouterr()
    assert main(["tile", "-w", str(workspace), "--no-prefect", "--force"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert snapshot(workspace) == before


def test_bad_slide_fails_alone_and_exit_code_is_2(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "fake.svs").write_text("not a slide")
    with (workspace / "slides.csv").open("a") as f:
        f.write("c,fake.svs,LUAD\nd,missing.svs,LUAD\n")
    assert main(["tile", "-w", str(workspace), "--no-prefect"]) == 2
    err = capsys.readouterr().err
    assert "fake.svs: not a slide format" in err and "missing.svs: slide file not found" in err
    assert sorted(read_table(workspace / "tiles.parquet", TILES)["slide_id"].unique()) == ["a", "b"]


def test_tile_size_larger_than_slide(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tile", "-w", str(workspace), "--no-prefect", "--tile-size-um", "1000"]) == 2
    assert "smaller than one tile" in capsys.readouterr().err


def test_workspace_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tile", "-w", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "histocurate init" in err and "Traceback" not in err


def test_bad_option_is_a_usage_error(workspace: Path) -> None:
    assert main(["tile", "-w", str(workspace), "--tissue-threshold", "abc"]) == 2
    assert main(["tile", "-w", str(workspace), "--no-prefect", "--tissue-threshold", "3"]) == 2


def test_help_does_not_import_prefect() -> None:
    code = (
        "import sys\nfrom histocurate.cli.app import main\nrc = main(['--help'])\n"
        "assert rc == 0, rc\nassert 'prefect' not in sys.modules, 'prefect imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
