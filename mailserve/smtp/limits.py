"""Connection counts and message rates: what keeps one client from taking the whole server.

Both are in-memory and per listener factory (a restart forgets them, as Postfix's anvil
does).  Both are bounded: the rate table holds at most ``max_keys`` clients, evicting the
least recently seen, so a flood of distinct addresses cannot exhaust memory.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["ConnectionLimits", "RateLimiter"]


class ConnectionLimits:
    """Concurrent connections overall and per client IP (``server.max_connections[_per_ip]``)."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def open(self, ip: str) -> str | None:
        """Count a new connection; returns why it is refused (and counts nothing) or ``None``."""
        if self.total >= self.max_total:
            return "Too many connections"
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return "Too many connections from your address"
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return None

    def close(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left <= 0:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = left


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
