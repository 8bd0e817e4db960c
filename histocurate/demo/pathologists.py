"""Simulated pathologists: clicks from the truth of a tile, posted to Cytomine as each user.

`simulate_clicks` is pure (truth + profile + rng -> clicks). `annotate_project` plays each
annotator against a Cytomine-compatible server with their own signed session (see
`histocurate.cytomine.rest`): it reads the campaign's projects the user is a member of (the
project, or their own ``<project> / <reader>`` project in a per-reader campaign), the tiles
assigned to the user (image properties ``histocurate.tile_id`` and
``histocurate.annotators``: names may be blinded), and posts the clicks still missing.
Posting is resumable and never duplicates: before each attempt the user's annotations on
the tile are listed and only the clicks not there yet are sent.

Clicks are on a 1/256 px grid (exact in floating point, so Cytomine's flipped y
round-trips exactly) and inside the image.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely

from histocurate.cytomine.export import READER_SEPARATOR
from histocurate.cytomine.images import ASSIGNMENT_KEY, IMAGE_CLASS, tile_of
from histocurate.cytomine.projects import term_names
from histocurate.cytomine.rest import SignedSession
from histocurate.cytomine.retry import CytomineCallError, RetryPolicy
from histocurate.demo.profiles import CONFUSABLE, AnnotatorProfile
from histocurate.labels import RARE_LABELS, UNKNOWN

GRID = 256.0  # clicks are multiples of 1/GRID px
CLICK_COLUMNS = ["annotator", "tile_id", "x", "y", "label"]


def quantize(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, dtype=float) * GRID) / GRID


def simulate_clicks(
    truth: pd.DataFrame,
    profile: AnnotatorProfile,
    *,
    mpp: float,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """The clicks one person makes on one tile: columns x, y (tile px, top-left), label.

    ``truth`` has x, y, label of the tile's nuclei (tile pixels, origin top-left).
    """
    n = len(truth)
    labels = truth["label"].astype(str).to_numpy()
    miss = np.array([profile.miss(lab) for lab in labels], dtype=float)
    rare = np.isin(labels, RARE_LABELS)
    keep = rng.random(n) >= miss
    keep &= ~(rare & (rng.random(n) < profile.skip_rare_rate))
    sd_px = profile.jitter_um / mpp
    x = truth["x"].to_numpy(dtype=float) + rng.normal(0, sd_px, n)
    y = truth["y"].to_numpy(dtype=float) + rng.normal(0, sd_px, n)
    given = labels.copy()
    confuse = rng.random(n) < profile.confusion_rate
    for i in np.flatnonzero(confuse):
        options = CONFUSABLE.get(labels[i], ())
        if options:
            given[i] = options[int(rng.integers(len(options)))]
    given[rng.random(n) < profile.unknown_rate] = UNKNOWN.id
    n_false = int(rng.poisson(profile.false_click_rate * n)) if n else 0
    fx, fy = rng.uniform(0, width, n_false), rng.uniform(0, height, n_false)
    f_label = rng.choice(np.array(["lymphocyte", "fibroblast", UNKNOWN.id]), n_false)
    clicks = pd.DataFrame(
        {
            "x": np.clip(quantize(np.concatenate([x[keep], fx])), 0, width),
            "y": np.clip(quantize(np.concatenate([y[keep], fy])), 0, height),
            "label": np.concatenate([given[keep], f_label]).astype(str),
        }
    )
    return clicks.drop_duplicates(["x", "y"]).reset_index(drop=True)


def _point_wkt(x: float, y_cytomine: float) -> str:
    return f"POINT ({float(x)!r} {float(y_cytomine)!r})"


def _key(x: float, y_cytomine: float, term: int) -> tuple[int, int, int]:
    return round(x * GRID), round(y_cytomine * GRID), int(term)


@dataclass
class SimulationResult:
    """The clicks each annotator meant to make (and made), and how many were posted."""

    clicks: pd.DataFrame  # CLICK_COLUMNS (tile px, top-left)
    posted: dict[str, int] = field(default_factory=dict)
    already_there: dict[str, int] = field(default_factory=dict)
    retries: int = 0


def _existing(
    session: SignedSession, project: int, image: int, user: int
) -> set[tuple[int, int, int]]:
    found = session.collection(
        "/api/annotation.json",
        project=project,
        image=image,
        user=user,
        showWKT="true",
        showTerm="true",
        showMeta="true",
    )
    keys = set()
    for a in found:
        geom = shapely.from_wkt(a.get("location") or "", on_invalid="ignore")
        if geom is not None and geom.geom_type == "Point":
            for term in a.get("term") or []:
                keys.add(_key(geom.x, geom.y, term))
    return keys


def post_missing(
    session: SignedSession,
    *,
    project: int,
    image: int,
    user: int,
    wanted: list[tuple[int, int, int]],
    chunk: int = 500,
) -> tuple[int, int]:
    """Post the annotations of ``wanted`` (grid keys) not on the server yet.

    Returns (posted, already there). A failed post is followed by a fresh listing, so a
    post that was stored although its answer was lost is not sent twice.
    """
    first_seen: int | None = None
    posted = 0
    for attempt in range(session.policy.attempts * 4):
        there = _existing(session, project, image, user)
        if first_seen is None:
            first_seen = sum(k in there for k in wanted)
        missing = [k for k in wanted if k not in there]
        if not missing:
            return posted, first_seen
        body = [
            {
                "location": _point_wkt(kx / GRID, ky / GRID),
                "image": image,
                "project": project,
                "term": [t],
            }
            for kx, ky, t in missing[:chunk]
        ]
        try:
            session.request(
                "POST", "/api/annotation.json", body=body, what=f"annotate image {image}"
            )
            posted += len(body)
        except CytomineCallError as exc:
            if not exc.transient:
                raise
            session.retries += 1
            time.sleep(session.policy.delay(min(attempt, 4)))
    raise CytomineCallError(f"annotate image {image}", None, "gave up after repeated failures")


@dataclass(frozen=True, slots=True)
class _Project:
    id: int
    user_id: int
    terms: dict[str, int]  # label -> term id


def _open_projects(session: SignedSession, name: str) -> list[_Project]:
    """The campaign's projects as this user sees them (none when not a member)."""
    me = session.get("/api/user/current.json")
    found = [
        p
        for p in session.collection("/api/project.json")
        if p["name"] == name or str(p["name"]).startswith(name + READER_SEPARATOR)
    ]
    projects = []
    for project in sorted(found, key=lambda p: int(p["id"])):
        pid = int(project["id"])
        term_of = {
            t["name"]: int(t["id"]) for t in session.collection(f"/api/project/{pid}/term.json")
        }
        terms = {lab: term_of[n] for lab, n in term_names().items()}
        projects.append(_Project(pid, int(me["id"]), terms))
    return projects


def _image_tile(session: SignedSession, image: dict[str, Any], username: str) -> str | None:
    """The tile of an image when it is assigned to ``username`` (None otherwise)."""
    found = session.collection(f"/api/domain/{IMAGE_CLASS}/{image['id']}/property.json")
    props = {p["key"]: p for p in found}
    assigned = props.get(ASSIGNMENT_KEY, {}).get("value")
    if assigned is not None and username not in str(assigned).split(","):
        return None
    return tile_of(image, props)


def _annotate_image(
    session: SignedSession,
    project: _Project,
    image: dict[str, Any],
    profile: AnnotatorProfile,
    truth: pd.DataFrame,
    seed: int,
    tile_id: str,
) -> tuple[pd.DataFrame, int, int]:
    """Simulate and post one annotator's clicks on one image; return (clicks, posted, there)."""
    width, height = int(image["width"]), int(image["height"])
    user_seed = zlib.crc32(profile.username.encode())
    rng = np.random.default_rng([seed, user_seed, zlib.crc32(tile_id.encode())])
    mpp = float(image.get("physicalSizeX") or 0.25)
    clicks = simulate_clicks(truth, profile, mpp=mpp, width=width, height=height, rng=rng)
    wanted = [
        _key(x, height - y, project.terms[lab])
        for x, y, lab in zip(clicks["x"], clicks["y"], clicks["label"], strict=True)
    ]
    posted, there = post_missing(
        session, project=project.id, image=int(image["id"]), user=project.user_id, wanted=wanted
    )
    made = clicks.assign(annotator=profile.username, tile_id=tile_id)[CLICK_COLUMNS]
    return made, posted, there


def annotate_project(
    host: str,
    keys: Mapping[str, tuple[str, str]],
    *,
    project: str,
    truth: pd.DataFrame,
    profiles: Sequence[AnnotatorProfile],
    seed: int = 0,
    policy: RetryPolicy | None = None,
) -> SimulationResult:
    """Every profile annotates the tiles assigned to it in ``project`` (a profile whose
    user is not a member of the project sees nothing and makes no click).

    ``truth``: tile_id, x, y, label (tile px, top-left), e.g. from
    `histocurate.synth.truth_in_tiles`. ``keys``: username -> (public, private) key.
    Returns the clicks made (exactly what an import must find) and posting counts.
    """
    by_tile = {str(t): g for t, g in truth.groupby("tile_id", sort=False)}
    empty = truth.iloc[0:0]
    made: list[pd.DataFrame] = []
    result = SimulationResult(pd.DataFrame(columns=CLICK_COLUMNS))
    for profile in profiles:
        if profile.username not in keys:
            raise KeyError(f"no keys for annotator {profile.username!r}")
        session = SignedSession(host, *keys[profile.username], policy=policy)
        try:
            posted = there = 0
            for proj in _open_projects(session, project):
                images = session.collection(f"/api/project/{proj.id}/imageinstance.json")
                for image in images:
                    tile = _image_tile(session, image, profile.username)
                    if tile is None:
                        continue
                    clicks, p, t = _annotate_image(
                        session, proj, image, profile, by_tile.get(tile, empty), seed, tile
                    )
                    made.append(clicks)
                    posted, there = posted + p, there + t
            result.posted[profile.username] = posted
            result.already_there[profile.username] = there
            result.retries += session.retries
        finally:
            session.close()
    if made:
        result.clicks = pd.concat(made, ignore_index=True)
    return result
