"""Lists read whole, whichever service serves them.

Cytomine serves two kinds of list. The core's (projects, users, images, annotations) take
``max``/``offset`` and ``max=0`` means everything. The lists moved to the repository
service (ontologies, terms, storages, uploaded files) take Spring's ``page``/``size`` and
answer 20 items per page whatever ``max`` says. Both answer ``{"collection": [...],
"size": total}``. `list_all` asks for everything, compares what came with ``size``, and
pages on (``page`` and ``offset`` both sent, so either kind serves the next items) until
it has them all or a page brings nothing new.
"""

from __future__ import annotations

from typing import Any, Protocol

from histocurate.cytomine.retry import CytomineCallError

MAX_PAGES = 100_000


class Getter(Protocol):
    """A connection or a signed session: ``get`` answers a path's JSON (retried)."""

    def get(self, path: str, what: str | None = None, **params: Any) -> Any: ...


def list_all(
    conn: Getter, path: str, what: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every item of the list at ``path`` (the connection's paths are relative to /api/, a
    signed session's start with /api/), in the server's order."""
    what = what or f"list {path}"
    first = conn.get(path, what, max=0, offset=0, **params)
    items, total, per_page = _page(first, what)
    seen = {item.get("id") for item in items}
    page = 1
    while len(items) < total and page < MAX_PAGES:
        answer = conn.get(
            path,
            f"{what} (page {page + 1})",
            max=0,
            offset=len(items),
            page=page,
            size=per_page,
            **params,
        )
        more = [i for i in _page(answer, what)[0] if i.get("id") not in seen]
        if not more:
            break  # the server gives no more than it gave: keep what came
        items += more
        seen.update(i.get("id") for i in more)
        page += 1
    return items


def _page(answer: Any, what: str) -> tuple[list[dict[str, Any]], int, int]:
    if not isinstance(answer, dict) or not isinstance(answer.get("collection"), list):
        raise CytomineCallError(what, 200, "the answer is not a Cytomine collection")
    items = list(answer["collection"])
    total = int(answer.get("size") or len(items))
    return items, total, max(1, len(items))
