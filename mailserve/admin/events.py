"""The recent log: a bounded in-memory ring of log events an administrator can filter.

Why in memory: the admin API and web admin answer "what just happened?" (a refused login, a
bounce) without reading log files, which may be on journald or elsewhere.  The ring is bounded
(``capacity`` events, each message cut to ``MAX_MESSAGE_LENGTH``), so a log flood costs a fixed
amount of memory; older events remain in the configured log output.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

MAX_MESSAGE_LENGTH = 2000
DEFAULT_CAPACITY = 2000
LEVELS = ("debug", "info", "warn", "error", "critical")
_LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}


@dataclass(frozen=True)
class LogEntry:
    seq: int
    time: float
    level: str
    namespace: str
    message: str

    def public(self) -> dict[str, Any]:
        return asdict(self)


@implementer(ILogObserver)
class RecentEvents:
    """A twisted.logger observer keeping the last ``capacity`` events at ``min_level`` or above."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, min_level: str = "info",
                 clock: Callable[[], float] = time.time) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._seq = 0
        self._min_rank = _LEVEL_RANK[min_level]
        self._clock = clock

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        name = getattr(level, "name", "info")
        if _LEVEL_RANK.get(name, 1) < self._min_rank:
            return
        try:
            message = formatEvent(event) or ""
        except Exception:  # noqa: BLE001 - a malformed event must never break logging
            message = str(event.get("log_format", ""))
        failure = event.get("log_failure")
        if failure is not None:
            message = f"{message}: {failure.getErrorMessage()}" if message else failure.getErrorMessage()
        self._seq += 1
        self._entries.append(LogEntry(
            self._seq, float(event.get("log_time") or self._clock()), name,
            str(event.get("log_namespace", ""))[:200], message[:MAX_MESSAGE_LENGTH],
        ))

    def query(self, *, level: str = "debug", contains: str = "", namespace: str = "",
              since: float = 0.0, after_seq: int = 0, limit: int = 100) -> list[LogEntry]:
        """Newest first: events at ``level`` or above whose message contains ``contains``
        (case-insensitive) and whose namespace starts with ``namespace``."""
        rank = _LEVEL_RANK[level]
        needle = contains.lower()
        out: list[LogEntry] = []
        for entry in reversed(self._entries):
            if entry.seq <= after_seq or entry.time < since:
                break
            if _LEVEL_RANK[entry.level] < rank:
                continue
            if needle and needle not in entry.message.lower():
                continue
            if namespace and not entry.namespace.startswith(namespace):
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out
