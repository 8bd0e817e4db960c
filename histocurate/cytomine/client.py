"""A thin adapter over ``cytomine-python-client`` 4.3 that turns its quirks into errors.

The client's quirks, and what this module does about each:

* A failed call returns ``False`` (no exception, no status). The adapter's session records
  the status and message of the last answer of each thread, and `Connection.call` raises
  `CytomineCallError` naming the call, or retries it (`histocurate.cytomine.retry`).
* Error bodies come in three shapes: ``{"errors": {"message": ...}}`` (core),
  ``{"errors": "..."}`` and PIMS's JSON list ``[{"status": 500, "error": ...}]``; any of
  them (or a web page) becomes one line of detail, keys scrubbed.
* Requests have no timeout. The session adds ``(connect, read)`` timeouts to each request.
* Connecting retries ``GET /server/ping`` every second for 120 s and checks only the
  status. `histocurate.cytomine.probe` pings once itself with a deadline, reads the JSON,
  and says what is wrong (redirect, web UI, old signature scheme, keys) in one line.
* ``configure_logging`` adds a stdout handler to the root logger at INFO. The adapter
  passes ``configure_logging=False``, silences the ``cytomine.client`` logger and removes
  such a handler if an earlier client added one.
* The last client built is a process-wide singleton. `connect` holds a process lock for
  the life of the connection: one connection at a time, others wait.
* Models' ``fetch`` pages wrongly and the repository-backed lists page by 20 whatever
  ``max`` says: lists are read raw and whole by `histocurate.cytomine.listing`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from cytomine import Cytomine
from cytomine.cytomine import URLRedirectionException

from histocurate.cytomine.credentials import Credentials, scrub
from histocurate.cytomine.retry import CytomineCallError, RetryPolicy, retrying
from histocurate.errors import UserInputError

log = logging.getLogger(__name__)
T = TypeVar("T")
_CONNECTION_LOCK = threading.Lock()
_CLIENT_LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"

__all__ = [
    "Connection",
    "CytomineAuthError",
    "CytomineCallError",
    "CytominePermissionError",
    "CytomineUnreachable",
    "RetryPolicy",
    "ServerInfo",
    "connect",
    "describe_answer",
    "remove_client_stdout_handler",
]


class CytomineAuthError(UserInputError):
    """The server refused the keys."""


class CytomineUnreachable(UserInputError):
    """The server does not answer, or not as Cytomine's API (wrong host, port, scheme).

    ``transient``: True when it did not answer at all (down, restarting): a scheduled run
    retries that later; a wrong address or a web page instead of the API is never retried.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class CytominePermissionError(UserInputError):
    """The user may not do this (HTTP 403)."""


def describe_answer(response: requests.Response) -> str:
    """One line of detail from an error answer, whatever its shape."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return f"not a JSON answer: {text[:120]!r}" if text else ""
    if isinstance(body, list):  # PIMS: [{"status": 500, "error": "..."}]
        parts = [str(b.get("error") or b.get("message") or b) for b in body if b]
        return "; ".join(parts)[:500]
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict):
            errors = errors.get("message") or json.dumps(errors)
        return str(errors or body.get("message") or body.get("detail") or "")[:500]
    return str(body)[:200]


class _RecordingSession(requests.Session):
    """Adds timeouts; remembers the last answer of each thread (status, error message)."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._timeout = timeout
        self._last = threading.local()

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        self._last.answer = (None, "")
        response = super().request(method, url, *args, **kwargs)
        detail = describe_answer(response) if response.status_code != 200 else ""
        self._last.answer = (response.status_code, detail)
        return response

    @property
    def last(self) -> tuple[int | None, str]:
        answer: tuple[int | None, str] = getattr(self._last, "answer", (None, ""))
        return answer


class _Client(Cytomine):
    """The library's client without the 120 s ping loop, with timeouts and no cache."""

    def __init__(self, credentials: Credentials, policy: RetryPolicy) -> None:
        self._policy = policy
        super().__init__(
            credentials.host,
            credentials.public_key,
            credentials.private_key,
            verbose=logging.CRITICAL,
            use_cache=False,
            configure_logging=False,
        )

    def _start(self) -> None:  # replaces the library's: no ping loop, our session
        self._session = _RecordingSession((self._policy.connect_timeout_s, self._policy.timeout_s))
        Cytomine._Cytomine__instance = self
        self._current_user = None
        self.set_current_user()


def remove_client_stdout_handler() -> None:
    """Drop the stdout handler that ``Cytomine(configure_logging=True)`` adds to the root."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        fmt = getattr(handler.formatter, "_fmt", None)
        if getattr(handler, "stream", None) is sys.stdout and fmt == _CLIENT_LOG_FORMAT:
            root.removeHandler(handler)
    logging.getLogger("cytomine.client").setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server said of itself (``/server/ping``) and where it takes uploads."""

    base_url: str
    version: str
    upload_url: str | None  # None: discovered at the first upload


class Connection:
    """One connected client (the process-wide singleton) with error-raising calls."""

    def __init__(
        self, client: _Client, credentials: Credentials, policy: RetryPolicy, server: ServerInfo
    ) -> None:
        self.client = client
        self.credentials = credentials
        self.policy = policy
        self.server = server
        self.upload_url = server.upload_url
        self.user_id: int = int(client.current_user.id)
        self.username: str = str(client.current_user.username)
        self.retries = 0  # how many calls were retried (for run reports)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def failure(self, call: str, status: int | None, detail: str) -> CytomineCallError:
        """The error for a failed answer (401 and 403 raise their own, user-facing errors)."""
        detail = scrub(detail, self.credentials)
        if status == 401:
            raise CytomineAuthError(
                f"Cytomine at {self.base_url} refused the keys during '{call}' (HTTP 401): "
                "check CYTOMINE_PUBLIC_KEY and CYTOMINE_PRIVATE_KEY"
            )
        if status == 403:
            raise CytominePermissionError(
                f"Cytomine user {self.username!r} may not '{call}' (HTTP 403): {detail}"
            )
        return CytomineCallError(call, status, detail or "the client returned False")

    def _attempt(self, call: str, fn: Callable[[], T | bool]) -> T:
        try:
            result = fn()
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CytomineCallError(call, None, type(exc).__name__) from None
        except URLRedirectionException:
            raise CytomineUnreachable(
                f"Cytomine call '{call}' was redirected: use the right scheme (http/https) "
                f"in the host {self.credentials.host!r}"
            ) from None
        if result is False:
            session: _RecordingSession = self.client._session
            raise self.failure(call, *session.last)
        return result  # type: ignore[return-value]

    def once(self, call: str, fn: Callable[[], T | bool]) -> T:
        """Run ``fn`` once, no retry (a create whose caller re-checks before sending again)."""
        return self._attempt(call, fn)

    def _count_retry(self) -> None:
        self.retries += 1

    def call(
        self,
        call: str,
        fn: Callable[[], T | bool],
        *,
        reconcile: Callable[[], T | None] | None = None,
    ) -> T:
        """Run ``fn`` (a client call returning False on failure) under the retry policy.

        ``reconcile`` looks up the object a failed *create* may nevertheless have made;
        when it finds one, that is the result and nothing is sent again.
        """
        return retrying(
            call,
            lambda: self._attempt(call, fn),
            self.policy,
            reconcile=reconcile,
            on_retry=self._count_retry,
        )

    # Raw JSON calls on /api/ paths (``path`` is relative to /api/, e.g. "project.json").

    def get(self, path: str, what: str | None = None, **params: Any) -> Any:
        return self.call(what or f"GET {path}", lambda: self.client.get(path, params or None))

    def post(
        self,
        path: str,
        body: Any,
        what: str | None = None,
        *,
        reconcile: Callable[[], Any | None] | None = None,
        **params: Any,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        return self.call(
            what or f"POST {path}",
            lambda: self.client.post(path, data=data, query_parameters=params or None),
            reconcile=reconcile,
        )

    def put(self, path: str, body: Any, what: str | None = None) -> Any:
        data = json.dumps(body)
        return self.call(what or f"PUT {path}", lambda: self.client.put(path, data=data))

    def delete(self, path: str, what: str | None = None) -> bool:
        result: bool = self.call(what or f"DELETE {path}", lambda: self.client.delete(path))
        return result


@contextmanager
def connect(
    credentials: Credentials, policy: RetryPolicy | None = None, *, upload_url: str | None = None
) -> Iterator[Connection]:
    """Connect (bounded wait), check the server and the keys, and hold the singleton until
    the block ends. Every failure to connect is a one-line `UserInputError`."""
    from histocurate.cytomine import probe

    policy = policy or RetryPolicy()
    remove_client_stdout_handler()
    with _CONNECTION_LOCK:
        host, protocol = Cytomine._parse_url(credentials.host)
        base_url = f"{protocol}://{host}"
        version = probe.wait_for_server(base_url, policy)
        client: _Client | None = None
        try:
            client = probe.build_client(
                lambda: _Client(credentials, policy), credentials, base_url, policy
            )
            remove_client_stdout_handler()
            server = ServerInfo(base_url, version, upload_url)
            yield Connection(client, credentials, policy, server)
        finally:
            if client is not None:
                client._session.close()
            Cytomine._Cytomine__instance = None
