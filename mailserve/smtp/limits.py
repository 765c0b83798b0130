"""Message rates: what keeps one client or sender from taking the whole server.

In-memory and per listener factory (a restart forgets them, as Postfix's anvil does), and
bounded: the rate table holds at most ``max_keys`` clients, evicting the least recently seen,
so a flood of distinct addresses cannot exhaust memory.  Concurrent connections are limited
elsewhere, once for every listener (``mailserve.listeners.ConnectionGate``).

The limits (``smtp.rate_per_ip``, ``smtp.rate_per_sender``) are live settings: a limiter can be
given a callable that it asks at every check, so a configuration change through the admin API
applies to the next message without a restart.  Events are recorded only while a limit is set,
so raising a limit from 0 starts counting at the change, as a fresh Postfix ``anvil`` would.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (0 = unlimited); sliding window.

    ``limit`` is a number, or a no-argument callable read at every check (a live setting).
    """

    def __init__(self, limit: int | Callable[[], int], window: float, clock: Callable[[], float],
                 max_keys: int = 100_000) -> None:
        self._limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    @property
    def limit(self) -> int:
        """The limit in force now (0 = unlimited)."""
        return self._limit() if callable(self._limit) else self._limit

    def allow(self, key: str) -> bool:
        """Record one event for ``key`` if it is within the limit; ``False`` when over it."""
        limit = self.limit
        if limit <= 0:
            return True
        now = self.clock()
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
            if len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= limit:
            return False
        events.append(now)
        return True
