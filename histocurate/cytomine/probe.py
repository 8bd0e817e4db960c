"""Connecting, and saying in one line what is wrong when it fails.

What can be wrong, and what each check reports (always naming the host):

* the host name does not resolve: "the host name ... does not resolve (DNS)" at once (a
  misspelt host; not retried);
* nothing answers (refused, reset) or it answers too slowly: retried until
  ``connect_deadline_s``, then "does not answer ... (connection refused / timed out)";
* the host redirects (``http://`` given for an https server): "redirects to <url>: use
  that address";
* the host serves the web UI, not the API (``/server/ping`` or ``/api/user/current.json``
  answers a page, or the ping JSON lacks ``alive``; compose serves the UI on :80 and the
  core on :8080): "serves a web page, not Cytomine's API, on <path>";
* the server expects the older signature that signs the path (Cytomine-core builds before
  2025-12-18): "unsupported: histocurate supports Cytomine builds from 2025-12-18 on";
* the keys are wrong: "refused the keys ... check CYTOMINE_PUBLIC_KEY".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from cytomine import Cytomine
from cytomine.cytomine import URLRedirectionException
from urllib3.exceptions import NameResolutionError

from histocurate.cytomine.credentials import Credentials
from histocurate.cytomine.retry import RetryPolicy, seconds
from histocurate.errors import UserInputError

C = TypeVar("C", bound=Cytomine)

SUPPORTED = (
    "histocurate supports Cytomine builds from 2025-12-18 on (the cytomine/cytomine "
    "monorepo, whose API keys are signed without the path, as cytomine-python-client 4.3.0 "
    "signs them)"
)


class CytomineServerVersionError(UserInputError):
    """The server speaks an API this client cannot (an older signature scheme)."""


def _unreachable(message: str, *, transient: bool = False) -> UserInputError:
    from histocurate.cytomine.client import CytomineUnreachable

    return CytomineUnreachable(message, transient=transient)


def _redirect(base_url: str, response: requests.Response) -> UserInputError:
    target = response.headers.get("location", "?")
    return _unreachable(
        f"Cytomine at {base_url} redirects to {target} (HTTP {response.status_code}): use that "
        "address as the host (http:// given for an https server?)"
    )


def _web_page(base_url: str, path: str = "/server/ping") -> UserInputError:
    return _unreachable(
        f"{base_url} serves a web page, not Cytomine's API, on {path}: give the address "
        "of the core (in Cytomine's compose the web UI is on port 80 and the core on 8080)"
    )


def _unresolved(exc: BaseException) -> bool:
    """Whether a connection error is a host name that does not resolve (DNS)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, NameResolutionError | socket.gaierror):
            return True
        todo += [err.__cause__, err.__context__, getattr(err, "reason", None)]
        todo += [a for a in err.args if isinstance(a, BaseException)]
    return False


def ping_answer(base_url: str, response: requests.Response) -> str:
    """The server version from a 200 ping answer; raise when it is not Cytomine's JSON."""
    try:
        body: Any = response.json()
    except ValueError:
        raise _web_page(base_url) from None
    if not isinstance(body, dict) or body.get("alive") is not True:
        raise _web_page(base_url)
    return str(body.get("version") or "unknown")


def wait_for_server(base_url: str, policy: RetryPolicy) -> str:
    """Ping ``/server/ping`` until Cytomine answers, at most ``connect_deadline_s`` seconds;
    return the server's version. Anything but Cytomine's answer is a one-line error."""
    deadline = time.monotonic() + policy.connect_deadline_s
    why, attempt = "no answer", 0
    while True:
        try:
            answer = requests.get(
                f"{base_url}/server/ping",
                timeout=(policy.connect_timeout_s, min(policy.timeout_s, 10.0)),
                allow_redirects=False,
            )
            if answer.is_redirect:
                raise _redirect(base_url, answer)
            if answer.status_code == 200:
                return ping_answer(base_url, answer)
            why = f"HTTP {answer.status_code}"
            if answer.status_code < 500:
                raise _unreachable(
                    f"{base_url} answers /server/ping with HTTP {answer.status_code}: not a "
                    "Cytomine server at this address; check the host and port"
                )
        except requests.exceptions.SSLError as exc:
            raise _unreachable(
                f"Cytomine at {base_url}: the TLS handshake failed ({type(exc).__name__}): "
                "check the certificate, or the scheme (http/https) of the host"
            ) from None
        except requests.ConnectionError as exc:
            if _unresolved(exc):
                host = urlsplit(base_url).hostname
                raise _unreachable(
                    f"Cytomine at {base_url}: the host name {host!r} does not resolve (DNS "
                    "failure): check the spelling of the host (CYTOMINE_HOST, [cytomine] host "
                    "or --host) and this machine's DNS"
                ) from None
            why = "connection refused or reset"
        except requests.Timeout:
            why = "timed out"
        except requests.RequestException as exc:  # not an address requests can use
            raise _unreachable(
                f"{base_url!r} is not a usable Cytomine address ({type(exc).__name__}): give "
                "the host as https://cytomine.example.org (or http://host:port)"
            ) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(policy.delay(attempt), remaining))
        attempt += 1
    raise _unreachable(
        f"Cytomine at {base_url} does not answer /server/ping ({why}, waited up to "
        f"{seconds(policy.connect_deadline_s)}): is the server running and the host right?",
        transient=True,
    )


def path_signature(private_key: str, method: str, content_type: str, date: str, path: str) -> str:
    """The signature of Cytomine-core builds before 2025-12-18: the path and query signed too."""
    token = f"{method}\n\n{content_type}\n{date}\n{path}".encode()
    return base64.b64encode(hmac.new(private_key.encode(), token, hashlib.sha1).digest()).decode()


def signs_paths(base_url: str, credentials: Credentials, policy: RetryPolicy) -> bool:
    """Whether the server accepts the keys when the path is signed (an older server)."""
    path = "/api/user/current.json"
    headers = Cytomine._headers()
    signature = path_signature(credentials.private_key, "GET", "", headers["date"], path)
    headers["authorization"] = f"CYTOMINE {credentials.public_key}:{signature}"
    try:
        answer = requests.get(
            f"{base_url}{path}",
            headers=headers,
            allow_redirects=False,
            timeout=(policy.connect_timeout_s, policy.timeout_s),
        )
    except (requests.ConnectionError, requests.Timeout):
        return False
    return answer.status_code == 200


def build_client(
    make: Callable[[], C], credentials: Credentials, base_url: str, policy: RetryPolicy
) -> C:
    """Build the client (it reads ``user/current.json``); say why when it cannot."""
    from histocurate.cytomine.client import CytomineAuthError

    status: int | None = None
    for attempt in range(policy.attempts):
        if attempt:
            time.sleep(policy.delay(attempt - 1))
        try:
            client = make()
        except (requests.ConnectionError, requests.Timeout):
            continue
        except URLRedirectionException as exc:
            raise _unreachable(
                f"Cytomine at {base_url} redirects its API ({exc.message}): use the scheme and "
                "address it redirects to as the host"
            ) from None
        except ValueError:  # a page where JSON was expected
            raise _web_page(base_url, "/api/user/current.json") from None
        if client.current_user is not False:
            return client
        status = client._session.last[0]
        client._session.close()
        if status in (401, 403):
            if signs_paths(base_url, credentials, policy):
                raise CytomineServerVersionError(
                    f"Cytomine at {base_url} accepts these keys only with the request path "
                    f"signed, as builds from before 2025-12-18 do: unsupported: {SUPPORTED}; "
                    "upgrade the server"
                )
            raise CytomineAuthError(
                f"Cytomine at {base_url} refused the keys (HTTP {status}): check "
                "CYTOMINE_PUBLIC_KEY and CYTOMINE_PRIVATE_KEY"
            )
        if status is not None and status < 500:
            raise _unreachable(
                f"Cytomine at {base_url} answers ping but user/current.json gives HTTP "
                f"{status}: is this the core's address?"
            )
    raise _unreachable(
        f"Cytomine at {base_url} answers ping but not user/current.json after "
        f"{policy.attempts} attempts ({f'HTTP {status}' if status else 'no answer'})",
        transient=True,
    )
