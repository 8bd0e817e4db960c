"""`histocurate dataset ...` end to end: build, list, show, export, import; exit codes and
messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from histocurate.cli.app import main
from tests.test_dataset_build import make_workspace
from tests.test_dataset_formats import pannuke_folder


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    make_workspace(tmp_path / "ws")
    return tmp_path / "ws"


def test_build_list_show_export(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = ["-w", str(ws)]
    assert (
        main(["dataset", "build", "--name", "train", "--source", "masks", *w, "--no-prefect"]) == 0
    )
    out = flat(capsys.readouterr().out)
    assert "# Dataset card: train@" in out and "13 tiles" in out
    assert (
        main(
            [
                "dataset",
                "build",
                "--name",
                "val",
                "--campaign",
                "camp",
                *w,
                "--no-prefect",
                "--folds",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(["dataset", "build", "--name", "train", "--source", "masks", *w, "--no-prefect"]) == 0
    )
    assert "up to date" in flat(capsys.readouterr().out)
    assert main(["dataset", "list", *w]) == 0
    listed = flat(capsys.readouterr().out)
    assert "train" in listed and "val" in listed
    assert main(["dataset", "show", "val", "--verify", *w]) == 0
    shown = flat(capsys.readouterr().out)
    assert "content hash: ok" in shown and "nuclei per class and fold" in shown
    assert (
        main(["dataset", "export", "train", str(tmp_path / "gj"), "--format", "geojson", *w]) == 0
    )
    assert len(list((tmp_path / "gj").glob("*.geojson"))) == 13
    assert (
        main(["dataset", "export", "train", str(tmp_path / "pn"), "--format", "pannuke", *w]) == 0
    )
    assert "without a pannuke class left out" in flat(capsys.readouterr().out)
    assert (tmp_path / "pn" / "Fold 1" / "masks" / "fold1" / "masks.npy").exists()
    cv = ["dataset", "export", "train", str(tmp_path / "cv"), "--format", "cellvit"]
    assert main([*cv, "--classes", "pannuke", *w]) == 0
    assert "kept as instances with type 0" in flat(capsys.readouterr().out)
    assert (tmp_path / "cv" / "dataset_config.yaml").exists()
    assert list((tmp_path / "cv" / "fold0" / "labels").glob("0_*.npy"))


def test_import_then_show(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pannuke_folder(tmp_path / "pannuke")
    assert (
        main(
            [
                "dataset",
                "import",
                "pannuke",
                str(tmp_path / "pannuke"),
                "--name",
                "pn",
                "-w",
                str(ws),
            ]
        )
        == 0
    )
    assert main(["dataset", "show", "pn", "-w", str(ws)]) == 0
    assert "Inflammatory cell (unspecified)" in flat(capsys.readouterr().out)


def test_bad_input_exits_2_with_one_line(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "campaigns" / "camp" / "consensus.parquet").unlink()
    assert (
        main(
            ["dataset", "build", "--name", "x", "-w", str(ws), "--source", "masks", "--no-prefect"]
        )
        == 2
    )
    err = flat(capsys.readouterr().err)
    assert "histocurate consensus --project camp" in err
    assert main(["dataset", "show", "nothing", "-w", str(ws)]) == 2
    assert "histocurate dataset build --name nothing" in flat(capsys.readouterr().err)
    assert main(["dataset", "build", "--name", "bad/name", "-w", str(ws), "--no-prefect"]) == 2
    assert main(["dataset", "import", "pannuke", str(ws), "--name", "p", "-w", str(ws)]) == 2
    assert "no images.npy" in flat(capsys.readouterr().err)


def test_a_missing_image_exits_2_but_builds_the_rest(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ws / "campaigns" / "camp" / "images" / "s0_t0.png").unlink()
    assert (
        main(
            ["dataset", "build", "--name", "x", "-w", str(ws), "--source", "masks", "--no-prefect"]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert "s0_t0" in flat(captured.err) and "12 tiles" in flat(captured.out)
