"""The cohort manifest: which slides, where, of which indication and cohort.

A CSV (or Parquet) file with columns ``slide_id``, ``path``, ``indication`` and optionally
``cohort`` (default: the config's cohort name) and ``mpp`` (overrides the slide's own
resolution). Relative paths are relative to the manifest's folder. Problems are reported
with the manifest's path and the row's line number, all at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from histocurate.errors import SchemaError, UserInputError
from histocurate.io.tables import check_partition_key

log = logging.getLogger(__name__)

REQUIRED = ("slide_id", "path", "indication")
OPTIONAL = ("cohort", "mpp")


class ManifestError(UserInputError):
    """The manifest is missing, empty or has invalid rows."""


def _read_raw(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ManifestError(
            f"{path}: manifest not found; list your slides there (columns {', '.join(REQUIRED)}) "
            "or set [cohort] manifest in histocurate.toml"
        )
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from None


def read_manifest(
    path: str | Path, *, indications: Sequence[str], default_cohort: str
) -> pd.DataFrame:
    """Read and validate a manifest; return the ``slides`` table (see data_schema/slides.py).

    Raises `ManifestError` listing every bad row (line numbers as in the file).
    """
    path = Path(path).expanduser().resolve()
    raw = _read_raw(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; expected {list(REQUIRED)}")
    extra = [c for c in raw.columns if c not in REQUIRED + OPTIONAL]
    if extra:
        log.warning("%s: ignoring column(s) %s", path, extra)
    if raw.empty:
        raise ManifestError(f"{path}: the manifest lists no slide")

    known = set(indications)
    problems: list[str] = []
    rows = []
    seen: dict[str, int] = {}
    for index, row in raw.reset_index(drop=True).iterrows():
        line = int(str(index)) + 2  # header is line 1
        slide_id = str(row["slide_id"]).strip()
        where = f"line {line} (slide_id {slide_id!r})"
        try:
            check_partition_key(slide_id)
        except SchemaError as exc:
            problems.append(f"{where}: slide_id {exc}")
        if slide_id in seen:
            problems.append(f"{where}: duplicate slide_id, already on line {seen[slide_id]}")
        seen.setdefault(slide_id, line)
        indication = str(row["indication"]).strip()
        if indication not in known:
            problems.append(
                f"{where}: unknown indication {indication!r}; use a TCGA study code or add it "
                "to [cohort] indications in histocurate.toml"
            )
        raw_path = str(row["path"]).strip()
        if not raw_path:
            problems.append(f"{where}: empty path")
        mpp = _parse_mpp(row.get("mpp", ""), where, problems)
        cohort = str(row.get("cohort", "") or "").strip() or default_cohort
        slide_path = Path(raw_path).expanduser()
        if not slide_path.is_absolute():
            slide_path = path.parent / slide_path
        rows.append(
            {
                "slide_id": slide_id,
                "path": str(slide_path.resolve()),
                "indication": indication,
                "cohort": cohort,
                "mpp_override": mpp,
            }
        )
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ManifestError(f"{path}: {len(problems)} problem(s):\n  {shown}{more}")
    return pd.DataFrame(rows)


def _parse_mpp(value: object, where: str, problems: list[str]) -> float | None:
    text = "" if value is None else str(value).strip()
    if text in ("", "nan", "None"):
        return None
    try:
        mpp = float(text)
    except ValueError:
        problems.append(f"{where}: mpp {text!r} is not a number")
        return None
    if not math.isfinite(mpp) or mpp <= 0:
        problems.append(f"{where}: mpp must be a positive number of um per pixel, got {text}")
        return None
    return mpp


def missing_slide_files(slides: pd.DataFrame, *, limit: int = 10) -> list[str]:
    """One line per slide of a ``slides`` table whose file does not exist (at most
    ``limit``, then a count): slides may be mounted later, so this is a warning."""
    gone = [
        (s, p)
        for s, p in zip(slides["slide_id"], slides["path"], strict=True)
        if not Path(p).exists()
    ]
    lines = [f"slide {s}: {p} does not exist (yet?)" for s, p in gone[:limit]]
    if len(gone) > limit:
        lines.append(f"... and {len(gone) - limit} more slide file(s) missing")
    return lines
