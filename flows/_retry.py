"""Which task failures are retried: transient ones only, never the user's input.

A task of a stage is retried, with a doubling wait, when its error may go away on its own:
no answer from a server, a 5xx (or 429) answer, a connection reset, an I/O error of a
network file system. An error that names bad input (`histocurate.errors.UserInputError`:
a bad file, an unknown option, refused keys) is never retried, nor is a bug (a
``ValueError``, a ``KeyError``), a missing file or a task that ran past its timeout.

>>> is_transient(ConnectionResetError("reset by peer"))
True
>>> is_transient(FileNotFoundError("slides/a.svs"))
False
>>> from histocurate.errors import UserInputError
>>> is_transient(UserInputError("--n-tiles must be >= 1"))
False
>>> from histocurate.cytomine.client import CytomineUnreachable
>>> is_transient(CytomineUnreachable("no answer after 20 s", transient=True))
True
>>> retry_delays(3, 10.0)
[10.0, 20.0, 40.0]
"""

from __future__ import annotations

from typing import Any

from histocurate.errors import UserInputError

# OSErrors that say something about the input, not the moment: retrying cannot help.
_LASTING_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of an error that carries a response (requests' HTTPError)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_task_timeout(exc: BaseException) -> bool:
    from prefect.task_engine import TaskRunTimeoutError

    return isinstance(exc, TaskRunTimeoutError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may not happen again if the same work is tried a little later."""
    flag = getattr(exc, "transient", None)  # CytomineCallError / CytomineUnreachable: no answer
    if isinstance(flag, bool):
        return flag and not _is_task_timeout(exc)
    if isinstance(exc, UserInputError) or _is_task_timeout(exc):
        return False
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ValueError):  # requests' InvalidURL and kin are OSError and ValueError
        return False
    return isinstance(exc, OSError) and not isinstance(exc, _LASTING_OS_ERRORS)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry a failed task only for a transient error."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read is no evidence of a transient error
        return False
    return isinstance(exc, BaseException) and is_transient(exc)


def retry_delays(retries: int, first_s: float) -> list[float]:
    """Waits before each retry: ``first_s``, then doubled each time."""
    return [first_s * 2**attempt for attempt in range(retries)]
