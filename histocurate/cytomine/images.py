"""Tile images on Cytomine: storages, image instances, their properties.

Images are mapped to tiles by the ``histocurate.tile_id`` property the export writes on
every image instance, so that blind mode (which replaces image names by ids) and
renamed files change nothing; the file name ``<tile_id>.png`` is only a fallback for
images without the property. Uploads themselves are in `histocurate.cytomine.upload`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from histocurate.cytomine.client import Connection
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.projects import created_object
from histocurate.errors import UserInputError

TILE_KEY = "histocurate.tile_id"
ASSIGNMENT_KEY = "histocurate.annotators"
IMAGE_CLASS = "be.cytomine.domain.image.ImageInstance"
PROJECT_CLASS = "be.cytomine.domain.project.Project"


class StorageError(UserInputError):
    """No storage the user can upload to."""


def _owner(storage: dict[str, Any]) -> int | None:
    owner = storage.get("userId", storage.get("user"))  # `user` before 2026-06
    return None if owner is None else int(owner)


def own_storage(conn: Connection, wanted: int | None = None) -> int:
    """The storage uploads go to: ``wanted`` when given (it must be the user's), else the
    user's own one (found by ``userId``, ``user`` on older servers)."""
    storages = list_all(conn, "storage.json", "list storages")
    mine = [s for s in storages if _owner(s) == conn.user_id]
    if wanted is not None:
        match = [s for s in storages if int(s["id"]) == wanted]
        if not match:
            raise StorageError(
                f"storage {wanted} ([cytomine] storage) is not visible to {conn.username!r} at "
                f"{conn.base_url}; their storages: {sorted(int(s['id']) for s in mine) or 'none'}"
            )
        if _owner(match[0]) != conn.user_id:
            raise StorageError(
                f"storage {wanted} ([cytomine] storage) belongs to user {_owner(match[0])}, not "
                f"to {conn.username!r}, who cannot upload there; use one of their own storages "
                f"({sorted(int(s['id']) for s in mine) or 'none'}) or unset it"
            )
        return wanted
    if not mine:
        raise StorageError(
            f"Cytomine user {conn.username!r} has no storage of their own at {conn.base_url} "
            "to upload to; ask the server's admin to create one, or set [cytomine] storage"
        )
    return int(min(mine, key=lambda s: int(s["id"]))["id"])


def properties(conn: Connection, domain: str, ident: int) -> dict[str, dict[str, Any]]:
    """Key -> property object of one domain object (an image, a project)."""
    found = list_all(conn, f"domain/{domain}/{ident}/property.json", f"list properties of {ident}")
    return {str(p["key"]): p for p in found}


def set_property(
    conn: Connection,
    domain: str,
    ident: int,
    key: str,
    value: str,
    current: dict[str, dict[str, Any]] | None = None,
) -> bool:
    """Create or update one key/value; False (and no call) when it already holds ``value``."""
    have = properties(conn, domain, ident) if current is None else current
    found = have.get(key)
    if found is not None and str(found.get("value")) == value:
        return False
    path = f"domain/{domain}/{ident}/property"
    body = {"key": key, "value": value, "domainClassName": domain, "domainIdent": ident}
    if found is None:

        def made() -> dict[str, Any] | None:
            now = properties(conn, domain, ident).get(key)
            return {"property": now} if now is not None and now.get("value") == value else None

        conn.post(f"{path}.json", body, f"set {key} of {ident}", reconcile=made)
    else:
        conn.put(
            f"{path}/{found['id']}.json", {**body, "id": found["id"]}, f"update {key} of {ident}"
        )
    have[key] = {**(found or {}), "key": key, "value": value}
    return True


def project_images(conn: Connection, project_id: int) -> list[dict[str, Any]]:
    images = list_all(
        conn, f"project/{project_id}/imageinstance.json", f"list images of project {project_id}"
    )
    return sorted(images, key=lambda i: int(i["id"]))


def tile_of(image: dict[str, Any], props: dict[str, dict[str, Any]]) -> str | None:
    """The tile of an image: its ``histocurate.tile_id`` property, else its file name."""
    prop = props.get(TILE_KEY)
    if prop is not None and prop.get("value"):
        return str(prop["value"])
    name = str(image.get("instanceFilename") or image.get("originalFilename") or "")
    return name.removesuffix(".png") if name.endswith(".png") else None


@dataclass
class ProjectImages:
    """The image instances of one project with their properties, grouped by tile."""

    project_id: int
    images: list[dict[str, Any]]
    props: dict[int, dict[str, dict[str, Any]]]
    by_tile: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: Connection, project_id: int) -> ProjectImages:
        images = project_images(conn, project_id)
        props = {int(i["id"]): properties(conn, IMAGE_CLASS, int(i["id"])) for i in images}
        found = cls(project_id, images, props)
        found.index()
        return found

    def index(self) -> None:
        by_tile: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for image in self.images:
            tile = tile_of(image, self.props.get(int(image["id"]), {}))
            if tile is not None:
                by_tile[tile].append(image)
        self.by_tile = dict(by_tile)

    def add(self, image: dict[str, Any], props: dict[str, dict[str, Any]]) -> None:
        self.images.append(image)
        self.props[int(image["id"])] = props
        self.index()

    def of_tile(self, tile_id: str) -> dict[str, Any] | None:
        """The image of a tile (the lowest id when there are several)."""
        found = self.by_tile.get(tile_id)
        return found[0] if found else None

    def of_base(self, base_image: int) -> dict[str, Any] | None:
        return next((i for i in self.images if int(i.get("baseImage") or -1) == base_image), None)


def attach(conn: Connection, images: ProjectImages, base_image: int) -> dict[str, Any]:
    """The instance of abstract image ``base_image`` in the project (made when missing:
    the same uploaded image in another project, with no second upload)."""
    found = images.of_base(base_image)
    if found is not None:
        return found

    def made() -> dict[str, Any] | None:
        now = next(
            (
                i
                for i in project_images(conn, images.project_id)
                if int(i.get("baseImage") or -1) == base_image
            ),
            None,
        )
        return None if now is None else {"imageinstance": now}

    answer = conn.post(
        "imageinstance.json",
        {"baseImage": base_image, "project": images.project_id},
        f"add image {base_image} to project {images.project_id}",
        reconcile=made,
    )
    image = created_object(answer, "imageinstance")
    images.add(image, {})
    return image
