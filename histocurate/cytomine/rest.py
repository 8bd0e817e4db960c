"""Raw signed HTTP requests to a Cytomine server, one session per user.

The library client is a process-wide singleton: it cannot act as nine annotators at once.
The simulated pathologists (and tests that edit annotations as a given user) therefore
sign their own requests with the client's own `CytomineAuth` (the same 4.x HMAC-SHA1
scheme and headers), one `SignedSession` per user, usable side by side. Retries follow
the one policy of `histocurate.cytomine.retry`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from cytomine import Cytomine
from cytomine.cytomine import CytomineAuth

from histocurate.cytomine.client import describe_answer
from histocurate.cytomine.listing import list_all
from histocurate.cytomine.retry import CytomineCallError, RetryPolicy, retrying

T = TypeVar("T")


class SignedSession:
    """Signed JSON requests as one user. Errors raise `CytomineCallError` (status kept)."""

    def __init__(
        self, host: str, public_key: str, private_key: str, policy: RetryPolicy | None = None
    ) -> None:
        host_only, protocol = Cytomine._parse_url(host)
        self.base_url = f"{protocol}://{host_only}"
        self.policy = policy or RetryPolicy()
        self._auth = CytomineAuth(public_key, private_key, f"{self.base_url}/api/", "/api/")
        self._session = requests.Session()
        self.retries = 0

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        what: str = "",
    ) -> Any:
        """One request (no retry). ``path`` starts with ``/api/`` or ``/server/``."""
        headers = Cytomine._headers(
            content_type="application/json" if method in ("POST", "PUT", "DELETE") else None
        )
        what = what or f"{method} {path}"
        try:
            answer = self._session.request(
                method,
                f"{self.base_url}{path}",
                params=params,
                headers=headers,
                auth=self._auth,
                data=None if body is None else json.dumps(body),
                allow_redirects=False,
                timeout=(self.policy.connect_timeout_s, self.policy.timeout_s),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CytomineCallError(what, None, type(exc).__name__) from None
        if answer.status_code != 200:
            raise CytomineCallError(what, answer.status_code, describe_answer(answer))
        return answer.json()

    def get(self, path: str, what: str | None = None, **params: Any) -> Any:
        """GET with retries (idempotent)."""
        what = what or f"GET {path}"
        return self.retrying(what, lambda: self.request("GET", path, params=params, what=what))

    def collection(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list (read whole: see `histocurate.cytomine.listing`)."""
        return list_all(self, path, **params)

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` under the retry policy (transient failures retried with backoff)."""
        return retrying(what, fn, self.policy, on_retry=self._count_retry)

    def _count_retry(self) -> None:
        self.retries += 1
