"""The one retry policy of every Cytomine call: timeouts, backoff, what is retried.

Every request histocurate sends to Cytomine (the library client's calls, the PIMS upload,
the simulated pathologists' signed sessions, the connection's ping) goes through
`retrying` with a `RetryPolicy`. Only transient failures are retried: no answer at all
(refused, reset, timed out) and 5xx answers. A 4xx is the request's fault and is raised at
once. A *create* that may have reached the server before its answer was lost is first
*reconciled* (looked up) before it is sent again, so nothing is created twice.

No retry library is installed with histocurate (urllib3's `Retry` cannot reconcile a
create, nor read the client's ``False`` answers), so this module is the policy.

>>> policy = RetryPolicy(attempts=3, backoff_s=0.0)
>>> tries = []
>>> def flaky() -> str:
...     tries.append(1)
...     if len(tries) < 3:
...         raise CytomineCallError("demo", 503, "busy")
...     return "ok"
>>> retrying("demo", flaky, policy), len(tries)
('ok', 3)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from histocurate.errors import HistocurateError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timeouts and retries of every call (seconds)."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    connect_deadline_s: float = 20.0
    upload_wait_s: float = 300.0  # how long PIMS may take to import one upload
    poll_s: float = 0.1  # first wait between two status polls (doubles up to 2 s)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        return float(min(self.max_backoff_s, self.backoff_s * 2**attempt))


def seconds(value: float) -> str:
    """A duration for a message: ``0.3 s``, ``2.5 s``, ``20 s`` (never ``0 s`` for 0.3).

    >>> seconds(0.3), seconds(2.5), seconds(300.0)
    ('0.3 s', '2.5 s', '300 s')
    """
    return f"{value:.0f} s" if value >= 10 else f"{value:.2g} s"


class CytomineCallError(HistocurateError):
    """A call failed: ``call`` names it, ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, call: str, status: int | None, detail: str) -> None:
        self.call, self.status, self.detail = call, status, detail
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"Cytomine call '{call}' failed ({what}): {detail}")

    @property
    def transient(self) -> bool:
        """No answer, or a 5xx: the same request may succeed later."""
        return self.status is None or self.status >= 500


def retrying(
    what: str,
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    reconcile: Callable[[], T | None] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``fn``; retry when it raises a transient `CytomineCallError`.

    Before each retry, ``reconcile()`` (when given) looks for what a failed *create* may
    nevertheless have made; when it finds it, that is the result and nothing is sent again.
    ``on_retry`` is called once per retry (run reports count them).
    """
    error: CytomineCallError | None = None
    for attempt in range(policy.attempts):
        if attempt:
            if on_retry is not None:
                on_retry()
            time.sleep(policy.delay(attempt - 1))
            if reconcile is not None:
                found = reconcile()
                if found is not None:
                    return found
        try:
            return fn()
        except CytomineCallError as exc:
            if not exc.transient:
                raise
            error = exc
            log.debug("transient failure of %r: %s", what, exc)
    assert error is not None
    raise error


def poll(
    what: str, check: Callable[[], T | None], policy: RetryPolicy, *, deadline_s: float
) -> T | None:
    """Call ``check`` until it returns something (returned) or ``deadline_s`` passes (None).

    Waits ``policy.poll_s`` between the first checks, doubling up to 2 s.
    """
    deadline = time.monotonic() + deadline_s
    wait = policy.poll_s
    while True:
        found = check()
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.debug("gave up polling %r after %.1f s", what, deadline_s)
            return None
        time.sleep(min(wait, remaining))
        wait = min(2.0, wait * 2)
