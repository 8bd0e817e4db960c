"""The Cytomine operations a campaign needs, each idempotent and safe to retry.

Every create first looks for what it would create (by name, by file name, by key), so a
re-run, or a retry after an answer was lost, never makes a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cytomine.models import (
    AnnotationCollection,
    ImageInstance,
    ImageInstanceCollection,
    Ontology,
    OntologyCollection,
    Project,
    ProjectCollection,
    Property,
    PropertyCollection,
    StorageCollection,
    Term,
    TermCollection,
    User,
    UserCollection,
)

from histocurate.cytomine.client import Connection, CytomineCallError
from histocurate.errors import UserInputError
from histocurate.labels import ANNOTATION_LABELS, cell_type

ASSIGNMENT_KEY = "histocurate.annotators"
TILE_KEY = "histocurate.tile_id"


class ProjectOntologyError(UserInputError):
    """A project with this name exists but its ontology is not the histocurate one."""


class UnknownUserError(UserInputError):
    """An annotator's username does not exist on the server."""


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    """A project with its ontology's terms: label id -> term id (and the reverse)."""

    id: int
    name: str
    ontology_id: int
    term_by_label: dict[str, int]
    extra_terms: dict[int, str]  # terms of the ontology that are not histocurate labels

    @property
    def label_by_term(self) -> dict[int, str]:
        return {t: label for label, t in self.term_by_label.items()}


def term_names() -> dict[str, str]:
    """Cytomine term name of each label (the ontology's display names)."""
    return {label: cell_type(label).name for label in ANNOTATION_LABELS}


def _new_term(name: str, ontology: int, color: str) -> Any:
    return Term(name, ontology, color).save()


def _add_user(project_id: int, user_id: int) -> Any:
    return Project(id=project_id).add_user(user_id)


def find_project(conn: Connection, name: str) -> Any | None:
    projects = conn.call("list projects", lambda: ProjectCollection().fetch())
    found = [p for p in projects if p.name == name]
    return found[0] if found else None


def _terms(conn: Connection, ontology_id: int) -> list[Any]:
    return list(
        conn.call(
            f"list terms of ontology {ontology_id}",
            lambda: TermCollection(filters={"ontology": ontology_id}).fetch(),
        )
    )


def _project_info(conn: Connection, project: Any) -> ProjectInfo:
    names = term_names()
    by_name = {t.name: int(t.id) for t in _terms(conn, int(project.ontology))}
    missing = [n for n in names.values() if n not in by_name]
    if missing:
        raise ProjectOntologyError(
            f"Cytomine project {project.name!r} exists with ontology "
            f"{getattr(project, 'ontologyName', project.ontology)!r}, which lacks the term(s) "
            f"{missing}; choose another project name (--project) or add these terms"
        )
    label_terms = {label: by_name[name] for label, name in names.items()}
    extra = {tid: n for n, tid in by_name.items() if n not in names.values()}
    return ProjectInfo(int(project.id), project.name, int(project.ontology), label_terms, extra)


def project_info(conn: Connection, name: str) -> ProjectInfo:
    """The existing project ``name`` and its terms; `UserInputError` if it does not exist."""
    project = find_project(conn, name)
    if project is None:
        raise UserInputError(
            f"no Cytomine project named {name!r} visible to {conn.username!r}; "
            "run `histocurate export` first or check the name"
        )
    return _project_info(conn, project)


def ensure_ontology(conn: Connection, name: str) -> int:
    """Find or create ontology ``name`` holding the 14 terms with their fixed colours."""

    def find() -> Any | None:
        found = [
            o
            for o in conn.call("list ontologies", lambda: OntologyCollection().fetch())
            if o.name == name
        ]
        return min(found, key=lambda o: o.id) if found else None

    onto = find() or conn.call(
        f"create ontology {name}", lambda: Ontology(name).save(), reconcile=find
    )
    oid = int(onto.id)
    have = {t.name for t in _terms(conn, oid)}
    for label, term in term_names().items():
        if term in have:
            continue

        def find_term(term: str = term) -> Any | None:
            return next((t for t in _terms(conn, oid) if t.name == term), None)

        conn.call(
            f"create term {term}",
            partial(_new_term, term, oid, cell_type(label).color),
            reconcile=find_term,
        )
    return oid


def ensure_project(conn: Connection, name: str) -> tuple[ProjectInfo, bool]:
    """Find or create the project (and its ontology); return it and whether it was created."""
    project = find_project(conn, name)
    if project is not None:
        return _project_info(conn, project), False
    oid = ensure_ontology(conn, f"histocurate cell types ({name})")
    project = conn.call(
        f"create project {name}",
        lambda: Project(name, oid).save(),
        reconcile=lambda: find_project(conn, name),
    )
    return _project_info(conn, project), True


def find_user(conn: Connection, username: str) -> int:
    try:
        user = conn.call(f"find user {username}", lambda: User().fetch(username))
    except CytomineCallError as exc:
        if exc.status in (400, 404):
            raise UnknownUserError(
                f"annotator {username!r} does not exist on Cytomine; users are created by the "
                "server's admin (sandbox: `histocurate sandbox-user`)"
            ) from None
        raise
    return int(user.id)


def project_members(conn: Connection, project_id: int) -> dict[int, str]:
    users = conn.call(
        f"list members of project {project_id}",
        lambda: UserCollection(filters={"project": project_id}).fetch(),
    )
    return {int(u.id): str(u.username) for u in users}


def ensure_members(conn: Connection, project_id: int, user_ids: list[int]) -> list[int]:
    """Add the users missing from the project; return those added."""
    members = project_members(conn, project_id)
    added = []
    for uid in user_ids:
        if uid not in members:
            conn.call(
                f"add user {uid} to project {project_id}",
                partial(_add_user, project_id, uid),
            )
            added.append(uid)
    return added


def own_storage(conn: Connection) -> int:
    storages = conn.call("list storages", lambda: StorageCollection().fetch())
    mine = [s for s in storages if getattr(s, "user", None) == conn.user_id] or list(storages)
    if not mine:
        raise UserInputError(f"Cytomine user {conn.username!r} has no storage to upload to")
    return int(mine[0].id)


def project_images(conn: Connection, project_id: int) -> dict[str, Any]:
    """Image instances of the project by file name (lowest id wins if a name repeats)."""
    images = conn.call(
        f"list images of project {project_id}",
        lambda: ImageInstanceCollection(filters={"project": project_id}).fetch(),
    )
    by_name: dict[str, Any] = {}
    for image in sorted(images, key=lambda i: i.id):
        by_name.setdefault(str(image.instanceFilename), image)
    return by_name


def upload_image(conn: Connection, path: Path, *, storage_id: int, project_id: int) -> Any:
    """Upload one image into the project unless an image of that file name is there."""
    name = path.name

    def find() -> Any | None:
        return project_images(conn, project_id).get(name)

    existing = find()
    if existing is not None:
        return existing
    conn.call(
        f"upload {name}",
        lambda: conn.client.upload_image(str(path), storage_id, project_id, sync=True),
        reconcile=find,
    )
    image = find()
    if image is None:
        raise CytomineCallError(f"upload {name}", 200, "uploaded but no image in the project")
    return image


def set_image_property(conn: Connection, image: Any, key: str, value: str) -> None:
    """Create or update one key/value on an image (no-op when already equal)."""

    def current() -> Any | None:
        props = conn.call(
            f"list properties of image {image.id}", lambda: PropertyCollection(image).fetch()
        )
        return props.as_dict().get(key)

    prop = current()
    if prop is None:
        conn.call(
            f"set property {key} of image {image.id}",
            lambda: Property(image, key=key, value=value).save(),
            reconcile=current,
        )
        prop = current()
    if prop is not None and str(prop.value) != value:
        conn.call(f"update property {key} of image {image.id}", lambda: prop.update(value=value))


def image_properties(conn: Connection, image: Any) -> dict[str, str]:
    props = conn.call(
        f"list properties of image {image.id}", lambda: PropertyCollection(image).fetch()
    )
    return {str(k): str(p.value) for k, p in props.as_dict().items()}


def image_by_id(conn: Connection, image_id: int) -> Any:
    return conn.call(f"get image {image_id}", lambda: ImageInstance().fetch(image_id))


def annotations_of_image(conn: Connection, project_id: int, image_id: int) -> list[dict[str, Any]]:
    """Every annotation of one image (all users) with WKT, terms and times.

    The query is exactly the one ``AnnotationCollection(...).fetch()`` sends, through the
    client's own ``get``; the answer is kept as dicts rather than turned into one model
    object per annotation (a third of the import time at 200,000 annotations).
    """
    listing = AnnotationCollection(
        project=project_id, image=image_id, showWKT=True, showTerm=True, showMeta=True
    )
    answer = conn.call(
        f"list annotations of image {image_id}",
        lambda: conn.client.get(listing.uri(), listing.parameters),
    )
    keys = ("id", "image", "user", "location", "term", "created", "updated")
    return [{k: a.get(k) for k in keys} for a in answer["collection"]]
