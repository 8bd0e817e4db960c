"""Open a slide with OpenSlide and describe it (size, pyramid, resolution).

Every OpenSlide failure becomes a `SlideError` that names the file: a missing file, a text
file with a slide extension, a truncated TIFF and a slide without a resolution all stop the
one slide, with a message saying what to do, and never the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import openslide

from histocurate.errors import SlideError


@dataclass(frozen=True, slots=True)
class SlideInfo:
    """What tiling needs to know about a slide."""

    path: Path
    width: int  # level 0
    height: int
    mpp: float  # level-0 um/px (the manifest's override when given)
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    vendor: str | None


def open_slide(path: str | os.PathLike[str]) -> openslide.OpenSlide:
    """Open ``path`` with OpenSlide, turning every failure into a `SlideError`."""
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: slide file not found; fix the path in the manifest")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        if _looks_like_tiff(path):
            raise SlideError(
                f"{path}: a TIFF file that OpenSlide cannot read: damaged or truncated "
                "(copy it again), or not a whole-slide image"
            ) from None
        raise SlideError(
            f"{path}: not a slide format OpenSlide can read (SVS, TIFF, NDPI, MRXS, ...)"
        ) from None
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: the slide file is damaged or truncated ({exc})") from None


def _looks_like_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def slide_mpp(slide: openslide.OpenSlide, path: Path, override: float | None) -> float:
    """Level-0 resolution in um/px: the override, else the slide's own (x and y averaged)."""
    if override is not None:
        if not override > 0:
            raise SlideError(f"{path}: mpp override must be positive, got {override}")
        return float(override)
    props = slide.properties
    try:
        mpp_x = float(props[openslide.PROPERTY_NAME_MPP_X])
        mpp_y = float(props[openslide.PROPERTY_NAME_MPP_Y])
    except (KeyError, ValueError):
        raise SlideError(
            f"{path}: the slide records no resolution (mpp); add an 'mpp' value for it in "
            "the manifest"
        ) from None
    if mpp_x <= 0 or mpp_y <= 0:
        raise SlideError(f"{path}: the slide records an invalid resolution ({mpp_x}, {mpp_y})")
    return (mpp_x + mpp_y) / 2


def slide_info(path: str | os.PathLike[str], *, mpp_override: float | None = None) -> SlideInfo:
    """Open the slide at ``path`` and describe it (raises `SlideError` on any problem)."""
    path = Path(path)
    slide = open_slide(path)
    try:
        width, height = slide.dimensions
        return SlideInfo(
            path=path,
            width=int(width),
            height=int(height),
            mpp=slide_mpp(slide, path, mpp_override),
            level_dimensions=tuple((int(w), int(h)) for w, h in slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR),
        )
    finally:
        slide.close()
