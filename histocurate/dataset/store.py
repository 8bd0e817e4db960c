"""Dataset versions in the workspace: naming, listing, resolving ``NAME[@VERSION]``, and the
atomic write of a version.

A version is derived from what determines its content (the inputs' content digests and the
settings, see `version_of`), so the same inputs give the same version and a re-run finds it
done; new annotations give a new version *beside* the old one, which is never touched. A
version is written into a hidden staging folder ``datasets/<name>/.tmp-<version>-<pid>-...``
and renamed into place when complete: a reader sees a whole version or none, and an
interrupted build leaves no version (its staging folder is removed on the way out, or by the
next build when the process was killed).

>>> parse_spec("histoval@1a2b"), parse_spec("histoval")
(('histoval', '1a2b'), ('histoval', None))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histocurate.errors import UserInputError

INFO_FILE = "dataset.json"
TILES_FILE = "tiles.parquet"
NUCLEI_FILE = "nuclei.parquet"
CARD_FILE = "card.md"
PLOT_FILE = "class_distribution.png"
VERSION_LENGTH = 12
FORMAT_VERSION = 1  # bump when the builder's output changes for the same inputs

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STAGING = re.compile(r"^\.tmp-[0-9a-f]+-(\d+)-")


def datasets_root(workspace: Path) -> Path:
    """Where a workspace keeps its datasets (`histocurate.workspace.Workspace.datasets`)."""
    from histocurate.workspace import Workspace

    return Workspace(Path(workspace)).datasets


def workspace_path(path: Path | str, workspace: Path | str) -> str:
    """``path`` as ``dataset.json`` records it: relative to the workspace (POSIX) when inside
    it, so a moved or copied workspace keeps true provenance; absolute otherwise.

    >>> workspace_path("/ws/campaigns/c/masks.parquet", "/ws"), workspace_path("/data/pn", "/ws")
    ('campaigns/c/masks.parquet', '/data/pn')
    """
    path, workspace = Path(path), Path(workspace)
    for a, b in ((path, workspace), (path.resolve(), workspace.resolve())):
        try:
            return a.relative_to(b).as_posix()
        except ValueError:
            continue
    return str(path)


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UserInputError(
            f"dataset name {name!r} cannot name a folder: use letters, digits, '.', '_' and "
            "'-' (starting with a letter or digit)"
        )
    return name


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION`` -> (name, version or None)."""
    name, _, version = spec.partition("@")
    return check_name(name), (version or None)


def version_of(payload: Any) -> str:
    """The version id of a dataset: a digest of everything that determines its content
    (JSON-serialisable: settings and the inputs' content digests)."""
    text = json.dumps({"format": FORMAT_VERSION, "inputs": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_LENGTH]


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One complete version of a dataset, with one property per file."""

    name: str
    version: str
    path: Path

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tiles(self) -> Path:
        return self.path / TILES_FILE

    @property
    def nuclei(self) -> Path:
        return self.path / NUCLEI_FILE

    @property
    def info_path(self) -> Path:
        return self.path / INFO_FILE

    @property
    def card(self) -> Path:
        return self.path / CARD_FILE

    @property
    def plot(self) -> Path:
        return self.path / PLOT_FILE

    def info(self) -> dict[str, Any]:
        try:
            found = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(
                f"{self.info_path}: cannot read the dataset description ({exc}); rebuild "
                f"with `histocurate dataset build --name {self.name}`"
            ) from None
        if not isinstance(found, dict):
            raise UserInputError(f"{self.info_path}: not a dataset description")
        return found

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in (INFO_FILE, TILES_FILE, NUCLEI_FILE))


def _created(version: DatasetVersion) -> str:
    try:
        return str(version.info().get("created_at", ""))
    except UserInputError:
        return ""


def list_datasets(root: Path, name: str | None = None) -> list[DatasetVersion]:
    """Complete versions under ``root`` (of one dataset, or all), oldest first per name."""
    if not root.is_dir():
        return []
    names = [name] if name else sorted(p.name for p in root.iterdir() if _NAME.match(p.name))
    found: list[DatasetVersion] = []
    for item in names:
        folder = root / item
        if not folder.is_dir():
            continue
        versions = [
            DatasetVersion(item, p.name, p)
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and _complete(p)
        ]
        found += sorted(versions, key=lambda v: (_created(v), v.version))
    return found


def resolve_dataset(root: Path, spec: str) -> DatasetVersion:
    """The version ``NAME@VERSION`` names (a unique prefix of the version is enough), or
    the latest version of ``NAME``."""
    name, version = parse_spec(spec)
    versions = list_datasets(root, name)
    if not versions:
        known = sorted({v.name for v in list_datasets(root)})
        raise UserInputError(
            f"no dataset {name!r} in {root} (datasets there: {', '.join(known) or 'none'}); "
            f"build it with `histocurate dataset build --name {name}`"
        )
    if version is None:
        return versions[-1]
    matches = [v for v in versions if v.version.startswith(version)]
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise UserInputError(
            f"{what} version {version!r} of dataset {name!r} (versions: "
            f"{', '.join(v.version for v in versions)}); see `histocurate dataset list`"
        )
    return matches[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_staging(folder: Path) -> list[Path]:
    """Remove staging folders left by builds that were killed (their process is gone)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _STAGING.match(path.name)
        if path.is_dir() and match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def staging(root: Path, name: str, version: str) -> Iterator[Path]:
    """A fresh staging folder for ``name@version``. The block publishes it with `commit`;
    whatever is still staged when the block ends (it raised, KeyboardInterrupt included, or
    chose not to commit) is removed."""
    folder = root / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    clean_staging(folder)
    tmp = folder / f".tmp-{version}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def commit(tmp: Path, version: str) -> Path:
    """Publish a staged version: rename it into place (atomic). If another build published
    the same version meanwhile, keep theirs (same inputs, same content) and drop ours."""
    final = tmp.parent / version
    try:
        os.rename(tmp, final)
    except OSError:
        if not _complete(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def file_digest(paths: list[Path]) -> str:
    """sha256 of files' bytes, in order (the content hash of a version's tables)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def write_info(path: Path, info: dict[str, Any]) -> None:
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
