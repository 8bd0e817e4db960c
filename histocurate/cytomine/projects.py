"""Projects, their ontology and their members: each operation idempotent and safe to retry.

Every create first looks for what it would create (by name), so a re-run, or a retry after
an answer was lost, never makes a duplicate. Projects are created, and existing ones
updated, with the settings that keep annotators independent (`INDEPENDENT`): contributors
see and edit only their own layer in the viewer (the API still lets a member list every
annotation of the project).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from histocurate.cytomine.client import Connection, CytominePermissionError
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.retry import CytomineCallError
from histocurate.errors import UserInputError
from histocurate.labels import ANNOTATION_LABELS, cell_type

# Contributors see only their own layer, managers' layers are hidden from them too, and
# a contributor may edit only their own annotations (RESTRICTED mode).
INDEPENDENT: Mapping[str, bool] = {
    "hideUsersLayers": True,
    "hideAdminsLayers": True,
    "isRestricted": True,
}
# A review project (the consensus back to the pathologists): every layer shown, so the
# readers see the consensus layer, and RESTRICTED, so they cannot edit it.
REVIEW: Mapping[str, bool] = {
    "hideUsersLayers": False,
    "hideAdminsLayers": False,
    "isRestricted": True,
}


class ProjectOntologyError(UserInputError):
    """A project with this name exists but its ontology is not the histocurate one."""


class ProjectNameTaken(UserInputError):
    """The project name belongs to a project the user cannot see (names are server-wide)."""


class UnknownUserError(UserInputError):
    """Annotators' usernames that do not exist on the server."""


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    """A project with its ontology's terms: label id -> term id (and the reverse)."""

    id: int
    name: str
    ontology_id: int
    term_by_label: dict[str, int]
    extra_terms: dict[int, str]  # terms of the ontology that are not histocurate labels
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label_by_term(self) -> dict[int, str]:
        return {t: label for label, t in self.term_by_label.items()}


def term_names() -> dict[str, str]:
    """Cytomine term name of each label (the ontology's display names)."""
    return {label: cell_type(label).name for label in ANNOTATION_LABELS}


def created_object(answer: Any, kind: str) -> dict[str, Any]:
    """The object a create answered with (under its class name, or ``data``)."""
    if isinstance(answer, dict):
        for key in (kind, "data"):
            found = answer.get(key)
            if isinstance(found, dict) and "id" in found:
                return found
        if "id" in answer:
            return answer
    raise CytomineCallError(f"create {kind}", 200, "the answer holds no created object")


def resolve_users(
    conn: Connection,
    usernames: Sequence[str],
    *,
    projects: Callable[[], Sequence[int]] | None = None,
) -> dict[str, int]:
    """User id of each username, from the server's user list (current servers look users up
    by numeric id only); every unknown name is reported at once.

    When the user list is forbidden to the caller (HTTP 403), the members of ``projects()``
    (the campaign's existing projects, if any) are used instead."""
    try:
        users = list_all(conn, "user.json", "list users")
        where = f"on Cytomine at {conn.base_url}"
    except CytominePermissionError:
        ids = list(projects()) if projects is not None else []
        if not ids:
            raise CytominePermissionError(
                f"Cytomine at {conn.base_url} does not let {conn.username!r} list the users "
                "(HTTP 403) and the campaign has no project yet whose members could name the "
                "annotators: use the keys of a user who may list users (not a guest), or "
                "create the project and add the annotators first"
            ) from None
        users = [
            {"id": uid, "username": name}
            for pid in ids
            for uid, name in project_members(conn, pid).items()
        ]
        where = (
            f"among the members of the campaign's project(s) at {conn.base_url} (the user "
            f"list is forbidden to {conn.username!r})"
        )
    by_name = {str(u.get("username")): int(u["id"]) for u in users}
    missing = [name for name in usernames if name not in by_name]
    if missing:
        raise UnknownUserError(
            f"annotator(s) {', '.join(repr(m) for m in missing)} do not exist {where}; check "
            "the names, or have the server's admin create them (or a manager add them to the "
            "project; sandbox: `histocurate sandbox-user`)"
        )
    return {name: by_name[name] for name in usernames}


def find_project(conn: Connection, name: str) -> dict[str, Any] | None:
    """The project named ``name`` among those the user can see."""
    found = [p for p in list_all(conn, "project.json", "list projects") if p.get("name") == name]
    return min(found, key=lambda p: int(p["id"])) if found else None


def projects_named(conn: Connection, prefix: str) -> list[dict[str, Any]]:
    """Projects whose name starts with ``prefix`` (the per-reader projects of a campaign)."""
    projects = list_all(conn, "project.json", "list projects")
    return sorted(
        (p for p in projects if str(p.get("name", "")).startswith(prefix)),
        key=lambda p: int(p["id"]),
    )


def _terms(conn: Connection, ontology_id: int) -> list[dict[str, Any]]:
    return list_all(conn, f"ontology/{ontology_id}/term.json", f"list terms of {ontology_id}")


def _term_ids(conn: Connection, ontology_id: int, where: str) -> dict[str, int]:
    """Term name -> id of an ontology; a name given twice is an error."""
    ids: dict[str, list[int]] = defaultdict(list)
    for term in _terms(conn, ontology_id):
        ids[str(term.get("name"))].append(int(term["id"]))
    ours = set(term_names().values())
    twice = {n: sorted(v) for n, v in ids.items() if len(v) > 1 and n in ours}
    if twice:
        listed = "; ".join(f"{n!r} ({', '.join(map(str, v))})" for n, v in twice.items())
        raise ProjectOntologyError(
            f"the ontology of {where} has the term(s) {listed} more than once: merge them on "
            "Cytomine (keep one of each), then re-run"
        )
    return {n: v[0] for n, v in ids.items()}


def info_of(conn: Connection, project: dict[str, Any]) -> ProjectInfo:
    names = term_names()
    name = str(project["name"])
    if project.get("ontology") is None:
        raise ProjectOntologyError(
            f"Cytomine project {name!r} has no ontology; choose another project name "
            "(--project) or give it the histocurate ontology"
        )
    by_name = _term_ids(conn, int(project["ontology"]), f"project {name!r}")
    missing = [n for n in names.values() if n not in by_name]
    if missing:
        raise ProjectOntologyError(
            f"Cytomine project {name!r} exists with ontology "
            f"{project.get('ontologyName') or project['ontology']!r}, which lacks the term(s) "
            f"{missing}; choose another project name (--project) or add these terms"
        )
    label_terms = {label: by_name[n] for label, n in names.items()}
    extra = {tid: n for n, tid in by_name.items() if n not in names.values()}
    settings = {
        k: project.get(k) for k in (*INDEPENDENT, "blindMode", "numberOfReviewedAnnotations")
    }
    return ProjectInfo(
        int(project["id"]), name, int(project["ontology"]), label_terms, extra, settings
    )


def project_info(conn: Connection, name: str) -> ProjectInfo:
    """The existing project ``name`` and its terms; `UserInputError` if it is not visible."""
    project = find_project(conn, name)
    if project is None:
        raise UserInputError(
            f"no Cytomine project named {name!r} visible to {conn.username!r} at "
            f"{conn.base_url}: check the name, run `histocurate export` first, or use the keys "
            "of a member of the project (a manager can add the user)"
        )
    return info_of(conn, project)


def ensure_ontology(conn: Connection, name: str) -> int:
    """Find or create ontology ``name`` holding the 14 terms with their fixed colours."""

    def find() -> dict[str, Any] | None:
        found = [
            o for o in list_all(conn, "ontology.json", "list ontologies") if o.get("name") == name
        ]
        return min(found, key=lambda o: int(o["id"])) if found else None

    onto = find()
    if onto is None:
        answer = conn.post(
            "ontology.json",
            {"name": name},
            f"create ontology {name}",
            reconcile=lambda: {"ontology": o} if (o := find()) else None,
        )
        onto = created_object(answer, "ontology")
    oid = int(onto["id"])
    have = _term_ids(conn, oid, f"ontology {name!r}")
    for label, term in term_names().items():
        if term in have:
            continue

        def find_term(term: str = term) -> dict[str, Any] | None:
            found = _term_ids(conn, oid, f"ontology {name!r}").get(term)
            return None if found is None else {"term": {"id": found}}

        body = {"name": term, "ontology": oid, "color": cell_type(label).color}
        conn.post("term.json", body, f"create term {term}", reconcile=find_term)
    return oid


def _create_project(
    conn: Connection, name: str, oid: int, settings: Mapping[str, bool]
) -> dict[str, Any]:
    body = {"name": name, "ontology": oid, **settings}
    try:
        answer = conn.post(
            "project.json",
            body,
            f"create project {name}",
            reconcile=lambda: {"project": p} if (p := find_project(conn, name)) else None,
        )
    except CytomineCallError as exc:
        if exc.status in (400, 409) and "exist" in exc.detail.lower():
            raise ProjectNameTaken(
                f"a Cytomine project named {name!r} already exists, and {conn.username!r} is "
                "not a member of it (project names are unique server-wide): choose another "
                "--project, or ask its manager to add this user"
            ) from None
        raise
    return created_object(answer, "project")


def ensure_settings(
    conn: Connection, project: dict[str, Any], settings: Mapping[str, bool] = INDEPENDENT
) -> dict[str, Any]:
    """Give an existing project the settings (default: independent annotation; no call if
    it has them already)."""
    if all(project.get(k) == v for k, v in settings.items()):
        return project
    body = {**project, **settings}
    answer = conn.put(f"project/{project['id']}.json", body, f"update project {project['name']}")
    try:
        return created_object(answer, "project")
    except CytomineCallError:
        return body


def ensure_project(
    conn: Connection,
    name: str,
    *,
    ontology_of: str | None = None,
    ontology_id: int | None = None,
    settings: Mapping[str, bool] = INDEPENDENT,
) -> tuple[ProjectInfo, bool]:
    """Find or create project ``name`` with ``settings`` (default: independent annotation);
    return it and whether it was created. A new project gets the ontology ``ontology_id``
    when given, else the one named after ``ontology_of`` (default: the project)."""
    project = find_project(conn, name)
    created = project is None
    if project is None:
        oid = ontology_id or ensure_ontology(
            conn, f"histocurate cell types ({ontology_of or name})"
        )
        project = _create_project(conn, name, oid, settings)
    info = info_of(conn, project)  # checks the ontology before anything is changed
    if not created:
        project = ensure_settings(conn, project, settings)
        info = info_of(conn, project)
    return info, created


def project_members(conn: Connection, project_id: int) -> dict[int, str]:
    users = list_all(conn, f"project/{project_id}/user.json", f"list members of {project_id}")
    return {int(u["id"]): str(u["username"]) for u in users}


def ensure_members(conn: Connection, project_id: int, user_ids: Sequence[int]) -> list[int]:
    """Add the users missing from the project (as contributors); return those added."""
    members = project_members(conn, project_id)
    added = []
    for uid in user_ids:
        if uid not in members:
            conn.post(
                f"project/{project_id}/user/{uid}.json",
                None,
                f"add user {uid} to project {project_id}",
            )
            added.append(uid)
    return added
