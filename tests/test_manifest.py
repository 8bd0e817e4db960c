"""Manifest validation: every bad row named, nothing accepted half-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from histocurate.config import TCGA_INDICATIONS
from histocurate.manifest import ManifestError, read_manifest


def read(path: Path):
    return read_manifest(path, indications=TCGA_INDICATIONS, default_cohort="main")


def test_valid_manifest_resolves_paths_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "slide_id,path,indication,cohort,mpp\na,slides/a.svs,LUAD,,\nb,/abs/b.tiff,BRCA,site2,0.5\n"
    )
    slides = read(tmp_path / "m.csv")
    assert slides["path"].tolist() == [str(tmp_path / "slides/a.svs"), "/abs/b.tiff"]
    assert slides["cohort"].tolist() == ["main", "site2"]
    assert slides["mpp_override"].isna().tolist() == [True, False]
    assert slides["mpp_override"].iloc[1] == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "slide_id,path,indication\na,a.svs,LUAD\na,b.svs,LUAD\n",
            "line 3.*duplicate slide_id, already on line 2",
        ),
        ("slide_id,path,indication\na,a.svs,LUADX\n", "line 2.*unknown indication 'LUADX'"),
        ("slide_id,path,indication\n", "lists no slide"),
        ("", "cannot read the manifest"),
        ("slide_id,path\na,a.svs\n", r"missing column\(s\) \['indication'\]"),
        ("slide_id,path,indication,mpp\na,a.svs,LUAD,fast\n", "mpp 'fast' is not a number"),
        ("slide_id,path,indication,mpp\na,a.svs,LUAD,-1\n", "mpp must be a positive"),
        ("slide_id,path,indication\na/b,a.svs,LUAD\n", "cannot name a partition file"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError, match=message) as info:
        read(tmp_path / "m.csv")
    assert str(tmp_path / "m.csv") in str(info.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        read(tmp_path / "nope.csv")
