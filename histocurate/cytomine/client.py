"""A thin adapter over ``cytomine-python-client`` 4.3 that turns its quirks into errors.

The client's quirks, and what this module does about each:

* A failed call returns ``False`` (no exception, no status). The adapter's session records
  the status of the last response of each thread, and `Connection.call` raises
  `CytomineCallError` naming the call, or retries it.
* Requests have no timeout. The session adds ``(connect, read)`` timeouts to each request.
* Connecting retries ``GET /server/ping`` every second for 120 s. The adapter pings once
  itself, with a deadline (`RetryPolicy.connect_deadline_s`), then builds the client
  without the loop. A wrong key does not raise in the client (``current_user`` is
  ``False``); here it raises `CytomineAuthError`.
* ``configure_logging`` adds a stdout handler to the root logger at INFO. The adapter
  passes ``configure_logging=False``, silences the ``cytomine.client`` logger and removes
  such a handler if an earlier client added one.
* The last client built is a process-wide singleton. `connect` holds a process lock for
  the life of the connection: one connection at a time, others wait.
* ``Collection.fetch(max=N)`` pages wrongly; only plain ``fetch()`` is used. The HTTP cache
  is off (a cached listing would hide new annotations).

Retries: on transport errors (refused, reset, timeout) and 5xx answers only, with
exponential backoff; never on 4xx. A create that may have reached the server before the
failure is first *reconciled* (looked up) before it is sent again, so nothing is created
twice.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from cytomine import Cytomine
from cytomine.cytomine import URLRedirectionException

from histocurate.cytomine.credentials import Credentials, scrub
from histocurate.errors import HistocurateError, UserInputError

log = logging.getLogger(__name__)
T = TypeVar("T")
_CONNECTION_LOCK = threading.Lock()
_CLIENT_LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timeouts and retries of every call (seconds)."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    connect_deadline_s: float = 20.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2**attempt))


class CytomineCallError(HistocurateError):
    """A call failed: ``call`` names it, ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, call: str, status: int | None, detail: str) -> None:
        self.call, self.status, self.detail = call, status, detail
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"Cytomine call '{call}' failed ({what}): {detail}")

    @property
    def transient(self) -> bool:
        return self.status is None or self.status >= 500


class CytomineAuthError(UserInputError):
    """The server refused the keys."""


class CytomineUnreachable(UserInputError):
    """The server does not answer (down, wrong host or port)."""


class CytominePermissionError(UserInputError):
    """The user may not do this (HTTP 403)."""


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
        detail = ""
        if response.status_code != 200:
            try:
                body = response.json()
                detail = str(body.get("errors") or body.get("message") or "")
            except ValueError:
                detail = response.text[:200]
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
            credentials.host, credentials.public_key, credentials.private_key,
            verbose=logging.CRITICAL, use_cache=False, configure_logging=False,
        )  # fmt: skip

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


def wait_for_server(base_url: str, policy: RetryPolicy) -> None:
    """Ping ``/server/ping`` until it answers 200, at most ``connect_deadline_s`` seconds."""
    deadline = time.monotonic() + policy.connect_deadline_s
    why, attempt = "no answer", 0
    while True:
        try:
            answer = requests.get(
                f"{base_url}/server/ping",
                timeout=(policy.connect_timeout_s, min(policy.timeout_s, 10.0)),
            )
            if answer.status_code == 200:
                return
            why = f"HTTP {answer.status_code}"
            if answer.status_code < 500:
                break
        except requests.ConnectionError:
            why = "connection refused or reset"
        except requests.Timeout:
            why = "timed out"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(policy.delay(attempt), remaining))
        attempt += 1
    raise CytomineUnreachable(
        f"Cytomine at {base_url} does not answer /server/ping ({why}, waited up to "
        f"{policy.connect_deadline_s:.0f} s): is the server running and the host right?"
    )


class Connection:
    """One connected client (the process-wide singleton) with error-raising calls."""

    def __init__(self, client: _Client, credentials: Credentials, policy: RetryPolicy) -> None:
        self.client = client
        self.credentials = credentials
        self.policy = policy
        self.user_id: int = int(client.current_user.id)
        self.username: str = str(client.current_user.username)
        self.retries = 0  # how many calls were retried (for run reports)

    @property
    def base_url(self) -> str:
        return self.client._base_url(with_base_path=False)

    def _failure(self, call: str) -> CytomineCallError:
        session: _RecordingSession = self.client._session
        status, detail = session.last
        detail = scrub(detail, self.credentials)
        if status == 401:
            raise CytomineAuthError(
                f"Cytomine refused the keys during '{call}' (HTTP 401): check CYTOMINE_PUBLIC_KEY "
                "and CYTOMINE_PRIVATE_KEY"
            )
        if status == 403:
            raise CytominePermissionError(
                f"Cytomine user {self.username!r} may not '{call}' (HTTP 403): {detail}"
            )
        return CytomineCallError(call, status, detail or "the client returned False")

    def call(
        self,
        call: str,
        fn: Callable[[], T | bool],
        *,
        reconcile: Callable[[], T | None] | None = None,
    ) -> T:
        """Run ``fn`` (a client call); raise on failure, retry transient failures.

        ``reconcile`` looks up the object a failed *create* may nevertheless have made;
        when it finds one, that is the result and nothing is sent again.
        """
        error: CytomineCallError | None = None
        for attempt in range(self.policy.attempts):
            if attempt:
                self.retries += 1
                time.sleep(self.policy.delay(attempt - 1))
                if reconcile is not None:
                    found = reconcile()  # its own listings go through `call` (retried)
                    if found is not None:
                        return found
            try:
                result = fn()
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = CytomineCallError(call, None, type(exc).__name__)
                continue
            except URLRedirectionException:
                raise CytomineUnreachable(
                    f"Cytomine call '{call}' was redirected: use the right scheme "
                    f"(http/https) in the host {self.credentials.host!r}"
                ) from None
            if result is not False:
                return result  # type: ignore[return-value]
            error = self._failure(call)
            if not error.transient:
                raise error
            log.debug("transient failure of %r: %s", call, error)
        assert error is not None
        raise error


@contextmanager
def connect(credentials: Credentials, policy: RetryPolicy | None = None) -> Iterator[Connection]:
    """Connect (bounded wait), check the keys, and hold the singleton until the block ends."""
    policy = policy or RetryPolicy()
    remove_client_stdout_handler()
    with _CONNECTION_LOCK:
        host, protocol = Cytomine._parse_url(credentials.host)
        wait_for_server(f"{protocol}://{host}", policy)
        client: _Client | None = None
        try:
            for attempt in range(policy.attempts):
                try:
                    client = _Client(credentials, policy)
                except (requests.ConnectionError, requests.Timeout):
                    client = None
                if client is not None and client.current_user is not False:
                    break
                status = client._session.last[0] if client is not None else None
                if status in (401, 403):
                    raise CytomineAuthError(
                        f"Cytomine at {protocol}://{host} refused the keys (HTTP {status}): "
                        "check CYTOMINE_PUBLIC_KEY and CYTOMINE_PRIVATE_KEY"
                    )
                time.sleep(policy.delay(attempt))
            else:
                raise CytomineUnreachable(
                    f"Cytomine at {protocol}://{host} answers ping but not user/current.json "
                    f"after {policy.attempts} attempts"
                )
            assert client is not None
            remove_client_stdout_handler()
            yield Connection(client, credentials, policy)
        finally:
            if client is not None:
                client._session.close()
            Cytomine._Cytomine__instance = None
