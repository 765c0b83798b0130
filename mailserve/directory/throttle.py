"""Per-IP throttling of failed logins, shared by every protocol that authenticates.

A protocol asks ``check(ip)`` before verifying a password and reports the outcome; an
address that failed too often within the window is refused without a password check (so a
guessing attack costs us nothing), as Dovecot's auth penalty and Stalwart's fail2ban do.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class AuthThrottle:
    def __init__(
        self,
        max_failures: int = 10,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, ip: str) -> deque[float]:
        times = self._failures.get(ip)
        if times is None:
            return deque()
        cutoff = self._clock() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[ip]
        return times

    def blocked(self, ip: str | None) -> bool:
        if ip is None or self.max_failures <= 0:
            return False
        return len(self._recent(ip)) >= self.max_failures

    def failed(self, ip: str | None) -> int:
        """Record a failure; returns how many this address has in the window."""
        if ip is None:
            return 0
        times = self._recent(ip)
        if ip not in self._failures:
            self._failures[ip] = times
        times.append(self._clock())
        self._failures.move_to_end(ip)
        while len(self._failures) > self._max_tracked:
            self._failures.popitem(last=False)
        return len(times)

    def succeeded(self, ip: str | None) -> None:
        if ip is not None:
            self._failures.pop(ip, None)
