"""Fault injection for the sandbox server: errors, hangs and dropped connections.

A fault either happens *before* the request is processed (nothing was stored) or *after*
(the change is committed but the client never sees a clean answer). The second kind is
the one that makes naive retries duplicate data, so reliability tests need both.
A hang before processing never processes the request afterwards: a request that runs
after its client gave up cannot be told apart from a duplicate by any client.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("500", "503", "hang", "drop")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: ``kind`` in `KINDS`, ``after`` = once the request is processed."""

    kind: str
    after: bool


@dataclass
class FaultInjector:
    """Draws a fault for a fraction ``rate`` of requests (deterministic for a ``seed``).

    ``hang_s`` should exceed the client's read timeout. The ping endpoint is exempt
    unless ``include_ping``, so that a client can always tell "down" from "flaky".
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = KINDS
    hang_s: float = 35.0
    seed: int = 0
    include_ping: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not 0 <= self.rate <= 1:
            raise ValueError(f"fault rate must be in [0, 1] and kinds among {KINDS}")
        self._rng = random.Random(self.seed)

    def draw(self, path: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            if self.rate <= 0 or (path.startswith("/server/ping") and not self.include_ping):
                return None
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            after = kind != "503" and self._rng.random() < 0.5
            self.counts[f"{kind}-{'after' if after else 'before'}"] += 1
            return Fault(kind, after)

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, **dict(sorted(self.counts.items()))}
