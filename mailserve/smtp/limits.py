"""Message rates: what keeps one client or sender from taking the whole server.

In-memory and per listener factory (a restart forgets them, as Postfix's anvil does), and
bounded: the rate table holds at most ``max_keys`` clients, evicting the least recently seen,
so a flood of distinct addresses cannot exhaust memory.  Concurrent connections are limited
elsewhere, once for every listener (``mailserve.listeners.ConnectionGate``).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (0 = unlimited); sliding window."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Record one event for ``key`` if it is within the limit; ``False`` when over it."""
        if self.limit <= 0:
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
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True
