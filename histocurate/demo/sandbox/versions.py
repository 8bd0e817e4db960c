"""Server version profiles: how the sandbox behaves, build by build of the real Cytomine.

Read from Cytomine's sources (``../shared/notes/cytomine-server-versions.md``). Each
profile switches the behaviours that changed between builds; everything else (PIMS's
list-shaped errors and asynchronous import, project settings, per-user terms, reviewed
annotations, listing filters and errors) is the same in every profile.

==========  =====================================  ======================================
profile     real build                             what differs from the current one
==========  =====================================  ======================================
2025-10     cytomine/Cytomine-core (Spring)        signs the path: client 4.3.0 refused;
                                                   upload at /upload; user lookup by name;
                                                   storage ``user``; lists not paged
2025-12     monorepo 2025-12-18 .. 2026-03-16      upload at /upload and /ims/upload; user
                                                   lookup by name; ``user``; not paged
2026-03     monorepo 2026-03-16 .. 2026-06-17      /ims/upload only; lookup by name;
                                                   ``user``; not paged
2026-06     monorepo 4.3.0 (2026-06-23)            lookup by name; repository lists paged
2026-08     monorepo HEAD (current, the default)   numeric-only user lookup
==========  =====================================  ======================================

When the repository-backed lists (ontologies, terms, storages, uploaded files) started to
page by 20 is not dated in the notes; the sandbox pages them from 2026-06 on, the build
whose storages come from the repository service (``userId``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """The behaviours of one server build."""

    name: str
    build: str
    signs_path: bool = False  # HMAC over METHOD, content type, date *and* path + query
    upload_routes: tuple[str, ...] = ("/ims/upload",)
    user_by_name: bool = False  # GET /api/user/{username}.json answers
    storage_owner_field: str = "userId"
    pages_repository_lists: bool = True  # ontologies, terms, storages, uploaded files
    page_size: int = 20

    @property
    def version(self) -> str:
        return f"sandbox-{self.name}"


PROFILES: dict[str, ServerProfile] = {
    p.name: p
    for p in (
        ServerProfile(
            "2025-10",
            "cytomine/Cytomine-core (Spring), up to 2025-10",
            signs_path=True,
            upload_routes=("/upload",),
            user_by_name=True,
            storage_owner_field="user",
            pages_repository_lists=False,
        ),
        ServerProfile(
            "2025-12",
            "monorepo 2025-12-18 to 2026-03-16",
            upload_routes=("/upload", "/ims/upload"),
            user_by_name=True,
            storage_owner_field="user",
            pages_repository_lists=False,
        ),
        ServerProfile(
            "2026-03",
            "monorepo 2026-03-16 to 2026-06-17",
            user_by_name=True,
            storage_owner_field="user",
            pages_repository_lists=False,
        ),
        ServerProfile("2026-06", "monorepo at client 4.3.0 (2026-06-23)", user_by_name=True),
        ServerProfile("2026-08", "monorepo HEAD (2026-08), the current release"),
    )
}
CURRENT = PROFILES["2026-08"]
# The profiles client 4.3.0 can work with (every one but the path-signing build).
SUPPORTED = tuple(p for p in PROFILES.values() if not p.signs_path)


def profile(name: str | None) -> ServerProfile:
    """The profile called ``name`` (None: the current release)."""
    if name is None:
        return CURRENT
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown server version {name!r}: choose one of {', '.join(PROFILES)}"
        ) from None
