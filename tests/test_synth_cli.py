"""`histocurate synth` in a fresh workspace: manifest, no-op rerun, foreign manifests kept."""

from __future__ import annotations

import csv
from pathlib import Path

import openslide

from histocurate.cli.app import main


def _manifest(ws: Path) -> list[dict[str, str]]:
    with open(ws / "slides.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_synth_in_a_fresh_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    args = ["synth", "-w", str(ws), "--slides-per-indication", "1", "--size", "768", "--seed", "2"]
    assert main(args) == 0
    rows = _manifest(ws)
    assert [r["slide_id"] for r in rows][:2] == ["LUAD-000", "LUSC-000"] and len(rows) == 8
    assert set(rows[0]) == {"slide_id", "path", "indication", "cohort"}
    for row in rows:
        path = ws / row["path"]  # relative to the manifest's folder
        assert path.is_file() and not Path(row["path"]).is_absolute()
        assert openslide.OpenSlide(path).properties["openslide.mpp-x"].startswith("0.25")
        assert (ws / "synthetic" / "truth.parquet" / f"{row['slide_id']}.parquet").is_file()
    stamp = (ws / rows[0]["path"]).stat().st_mtime_ns
    assert main(args) == 0  # same settings: nothing regenerated, manifest rewritten
    assert (ws / rows[0]["path"]).stat().st_mtime_ns == stamp


def test_synth_refuses_a_foreign_manifest(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    foreign = "slide_id,path,indication\nmine,mine.svs,LUAD\n"
    (ws / "slides.csv").write_text(foreign)
    args = ["synth", "-w", str(ws), "--slides-per-indication", "1", "--size", "512"]
    assert main(args) == 2
    assert (ws / "slides.csv").read_text() == foreign
    assert not (ws / "synthetic" / "slides").exists()
    assert main([*args, "--force"]) == 0
    assert len(_manifest(ws)) == 8


def test_synth_rejects_a_bad_size(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    assert main(["synth", "-w", str(ws), "--size", "10x"]) == 2
