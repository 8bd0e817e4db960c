"""The pixels shown to the pathologists, frozen at export.

A tile's PNG is written once into the campaign folder (`Campaign.freeze_image`) and that
file is what is uploaded; the assignments table records its sha256 and the provenance
token of the slide's tiles it was cut from. Later runs keep it. A frozen image that went
missing (or was altered) is re-made from the slide only when the slide's tiles are
unchanged since (same token) and the re-made PNG has the recorded sha256; otherwise the
tile fails with what to do, since the annotated pixels can no longer be made again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histocurate.campaign import Campaign, png_bytes, sha256_of
from histocurate.errors import UserInputError

ImageSource = Callable[[pd.Series], np.ndarray]


class FrozenPixelsError(UserInputError):
    """A tile's frozen image is missing or altered and cannot be made again."""


@dataclass(frozen=True, slots=True)
class Frozen:
    """A tile's frozen image: where, its sha256, the tiles token, and what was done."""

    path: Path
    sha256: str
    tiles_token: str
    action: str  # kept, made, re-made


def default_source(tile: pd.Series) -> np.ndarray:
    from histocurate.slides import read_tile

    return read_tile(tile)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def freeze(
    campaign: Campaign,
    tile: pd.Series,
    *,
    record: dict[str, Any] | None,
    token: str,
    on_server: bool,
    source: ImageSource,
) -> Frozen:
    """The frozen image of ``tile``, made, kept or re-made (see the module docstring).

    ``record``: the tile's image_sha256 and tiles_token in the assignments (None: not
    recorded); ``token``: the slide's tiles token now; ``on_server``: the tile already has
    an image on Cytomine.
    """
    tile_id, mpp = str(tile["tile_id"]), float(tile["tile_mpp"])
    path = campaign.image_path(tile_id)
    have = _read(path)
    where = f"{path} (tile {tile_id} of {campaign.project!r})"
    restore = f"restore {path} from a backup, or remove the tile's image from the Cytomine project"
    if record is not None:
        if have is not None and sha256_of(have) == record["image_sha256"]:
            return Frozen(path, record["image_sha256"], record["tiles_token"], "kept")
        state = "is missing" if have is None else "is not the image exported (sha256 differs)"
        if token != record["tiles_token"]:
            raise FrozenPixelsError(
                f"{where} {state} and slide {tile['slide_id']} was retiled since the export "
                f"(its tiles changed), so the annotated pixels cannot be made again: {restore}"
            )
        rgb = source(tile)
        if sha256_of(png_bytes(rgb, mpp=mpp)) != record["image_sha256"]:
            raise FrozenPixelsError(
                f"{where} {state} and the slide now gives other pixels for it: {restore}"
            )
        written, sha = campaign.freeze_image(tile_id, rgb, mpp=mpp)
        return Frozen(written, sha, token, "re-made")
    rgb = source(tile)
    data = png_bytes(rgb, mpp=mpp)
    if on_server and have is None:
        raise FrozenPixelsError(
            f"tile {tile_id} is on Cytomine in {campaign.project!r} but this workspace has no "
            f"record of the pixels uploaded (no {path}, no assignments row): restore the "
            "workspace's assignments.parquet and campaign folder, or remove the image from the "
            "Cytomine project and re-run export"
        )
    if on_server and have is not None and sha256_of(have) != sha256_of(data):
        raise FrozenPixelsError(
            f"{where} is on Cytomine but differs from what the slide gives now, and no "
            f"assignments row says which was uploaded: {restore}"
        )
    if have is not None and sha256_of(have) == sha256_of(data):
        return Frozen(path, sha256_of(data), token, "kept")
    written, sha = campaign.freeze_image(tile_id, rgb, mpp=mpp)
    return Frozen(written, sha, token, "made")
