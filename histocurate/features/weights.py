"""Finding and loading model weights without a network.

Weights come from a path the user gives (a file, a model folder, or a Hugging Face cache)
or from the Hugging Face hub cache on this machine
(``<cache>/models--<org>--<name>/snapshots/<revision>/``). Nothing is ever downloaded: a
missing file is an error that lists where we looked and says where to put it. A file that
holds another architecture is an error that lists the missing and unexpected keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from histocurate.digest import file_sha256
from histocurate.errors import UserInputError
from histocurate.torchutil import describe_head, load_torch_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")


class WeightsError(UserInputError):
    """Weights are missing, unreadable, or of another architecture."""


def hf_cache_roots(extra: Path | None = None) -> list[Path]:
    """Hugging Face hub caches to search, most specific first (duplicates removed)."""
    env = os.environ
    candidates: list[Path] = []
    if extra is not None:
        candidates += [extra, extra / "hub"]
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            candidates.append(Path(env[name]))
    if env.get("HF_HOME"):
        candidates.append(Path(env["HF_HOME"]) / "hub")
    xdg = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    candidates.append(xdg / "huggingface" / "hub")
    seen: list[Path] = []
    for path in candidates:
        path = path.expanduser()
        if path not in seen:
            seen.append(path)
    return seen


def repo_folder_name(repo_id: str) -> str:
    """``owkin/phikon`` -> ``models--owkin--phikon`` (the hub cache layout)."""
    return "models--" + repo_id.replace("/", "--")


def snapshot_in(repo_dir: Path, required: Iterable[str] = ()) -> Path | None:
    """The snapshot of a ``models--org--name`` folder holding a weight file (and every
    ``required`` file): the one ``refs/main`` names, as huggingface_hub's local-only cache
    lookup finds it; else, for a cache copied without its refs, the newest usable one."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    required = tuple(required)

    def usable(folder: Path) -> bool:
        has_weights = any((folder / f).is_file() for f in WEIGHT_FILES)
        return has_weights and all((folder / r).is_file() for r in required)

    name = repo_dir.name.removeprefix("models--")
    if "--" in name:
        from huggingface_hub import try_to_load_from_cache

        repo_id = name.replace("--", "/", 1)
        for weight in WEIGHT_FILES:
            found = try_to_load_from_cache(repo_id, weight, cache_dir=repo_dir.parent)
            if isinstance(found, str) and usable(Path(found).parent):
                return Path(found).parent
    candidates = [p for p in snapshots.iterdir() if p.is_dir() and usable(p)]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def weight_file_in(folder: Path) -> Path | None:
    """The first weight file of a model folder (safetensors preferred)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_model_dir(
    *,
    encoder: str,
    repo_id: str,
    given: Path | None,
    hf_cache: Path | None,
    required: tuple[str, ...] = (),
    setting: str,
) -> Path:
    """The folder (or, for plain files, the file) holding ``encoder``'s weights.

    ``given`` may be a weight file, a model folder, a ``models--org--name`` folder or a hub
    cache root. Without it the hub caches are searched for ``repo_id``.
    """
    looked: list[str] = []
    if given is not None:
        given = given.expanduser()
        if given.is_file():
            return given
        if given.is_dir():
            if weight_file_in(given) is not None and all((given / r).is_file() for r in required):
                return given
            for repo_dir in (given, given / repo_folder_name(repo_id)):
                snap = snapshot_in(repo_dir, required)
                if snap is not None:
                    return snap
            for root in (given / "hub",):
                snap = snapshot_in(root / repo_folder_name(repo_id), required)
                if snap is not None:
                    return snap
        looked.append(str(given))
    else:
        for root in hf_cache_roots(hf_cache):
            repo_dir = root / repo_folder_name(repo_id)
            snap = snapshot_in(repo_dir, required)
            if snap is not None:
                return snap
            looked.append(str(repo_dir))
    need = ", ".join((*required, "model.safetensors (or pytorch_model.bin)"))
    default_cache = hf_cache_roots(None)[-1] / repo_folder_name(repo_id)
    raise WeightsError(
        f"no weights for encoder {encoder!r} (nothing is downloaded: no network is assumed). "
        f"Looked in: {'; '.join(looked)}. Either copy the Hugging Face cache folder of "
        f"{repo_id} (made by `huggingface-cli download {repo_id}` on a machine with network) "
        f"to {default_cache}, or put a folder holding {need} anywhere and set "
        f"{setting} = '/that/folder' in the features section of histocurate.toml (or pass "
        "--weights)."
    )


GIVE_WEIGHTS = (
    "give a weight file (model.safetensors, or a state dict saved with torch.save: .pth, .pt, "
    ".bin), a model folder holding model.safetensors or pytorch_model.bin, or the model's "
    "Hugging Face cache folder (models--<org>--<name>, as `huggingface-cli download` makes "
    "it), with --weights or the encoder's setting (phikon_weights, h0_mini_weights, "
    "timm_weights) in the [features] section of histocurate.toml"
)


def _read_safetensors(path: Path) -> Any:
    with path.open("rb") as f:
        head = f.read(64)
    # The format: an 8-byte little-endian header length, then the JSON header.
    if len(head) < 9 or head[8:9] != b"{":
        raise WeightsError(
            f"{path}: not a safetensors file ({describe_head(head)}); {GIVE_WEIGHTS}"
        )
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # any reader failure means the same thing to the user
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: {said}); the file "
            f"may be truncated or corrupt (copy it again); {GIVE_WEIGHTS}"
        ) from None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file (.safetensors, or a torch pickle loaded weights-only).

    A file that is neither (text, empty, other bytes) is a `WeightsError` saying what it is
    and what to give instead, in one line (`histocurate.torchutil.load_torch_file`). Common
    wrappers are undone: ``{"state_dict": ...}``, ``{"model": ...}`` and the ``module.``
    prefix that DataParallel adds.
    """
    if not path.is_file():
        raise WeightsError(f"{path}: no such weight file; {GIVE_WEIGHTS}")
    state: Any
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = load_torch_file(path, give_instead=GIVE_WEIGHTS, error=WeightsError)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(
            f"{path}: expected a mapping of parameter names to tensors (a state_dict)"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _listing(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_checked(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: Path,
    architecture: str,
    ignore_unexpected: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``model`` strictly; on any mismatch raise `WeightsError` listing
    the missing keys, the unexpected keys and the shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(ignore_unexpected)]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise wrong_architecture(
            source, architecture, missing=missing, unexpected=unexpected, mismatched=shapes
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)


def wrong_architecture(
    source: Path,
    architecture: str,
    *,
    missing: Iterable[str],
    unexpected: Iterable[str],
    mismatched: Iterable[str],
) -> WeightsError:
    """The error for a weight file that does not fit ``architecture``."""
    missing, unexpected, mismatched = list(missing), list(unexpected), list(mismatched)
    parts = []
    if missing:
        parts.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches (file vs model): {_listing(mismatched, 4)}")
    return WeightsError(
        f"{source}: these weights are not a {architecture} model ({'; '.join(parts)}). "
        "Check that the file is the right model's, or choose the encoder it belongs to."
    )


def fingerprint(path: Path) -> str:
    """sha256 of a weight file (or of a folder's weight file): recorded beside features so
    that resuming with other weights is noticed."""
    target = weight_file_in(path) if path.is_dir() else path
    if target is None:
        return "none"
    return file_sha256(target)
