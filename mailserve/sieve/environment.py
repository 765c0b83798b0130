"""What a running script may ask of the server (RFC 5228 §2.10 leaves the
environment to the implementation; each extension names what it needs).

Trackers are zope interfaces so the delivery pipeline can back them with the
metadata store; ``MemoryResponseTracker`` is the in-process implementation
used by tests and by tools that run a script once.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from zope.interface import Interface, implementer


class IResponseTracker(Interface):
    """Remembers keys for a while: duplicate IDs (RFC 7352 §3) and vacation
    responses sent to a sender (RFC 5230 §4.2)."""

    def seen(key: str) -> bool:
        """Whether ``key`` was recorded and has not expired."""

    def record(key: str, seconds: int, refresh: bool) -> None:
        """Remember ``key`` for ``seconds``.  If it is already known, its
        expiry moves only when ``refresh`` is true (duplicate ``:last``)."""


@implementer(IResponseTracker)
class MemoryResponseTracker:
    """Tracker kept in a dict; ``clock`` returns seconds since the epoch."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.expiry: dict[str, float] = {}

    def seen(self, key: str) -> bool:
        expires = self.expiry.get(key)
        if expires is None:
            return False
        if expires <= self.clock():
            del self.expiry[key]
            return False
        return True

    def record(self, key: str, seconds: int, refresh: bool) -> None:
        if self.seen(key) and not refresh:
            return
        self.expiry[key] = self.clock() + seconds


IncludeResolver = Callable[[str, str], "str | None"]


def _no_includes(name: str, location: str) -> str | None:
    return None


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class SieveEnvironment:
    """Everything outside the message that a script can observe.

    ``include_resolver(name, location)`` returns script text or ``None``;
    location is ``"personal"`` or ``"global"`` (RFC 6609 §3.2).
    ``now`` returns an aware datetime; its zone is the server's local zone
    for the date extension (RFC 5260 §4.1).
    Spam and virus scores follow RFC 5235: ``None`` means "not tested".
    """

    mailbox_exists: Callable[[str], bool] = lambda name: name.upper() == "INBOX"
    duplicate_tracker: IResponseTracker | None = None
    vacation_tracker: IResponseTracker | None = None
    include_resolver: Callable[[str, str], str | None] = _no_includes
    now: Callable[[], datetime.datetime] = _utc_now
    #: RFC 5235 §3.2: 1 (clean) .. 10 (spam).
    spam_score: int | None = None
    #: RFC 5235 §3.3 (spamtestplus :percent): 0 .. 100.
    spam_percent: int | None = None
    #: RFC 5235 §3.4: 1 (clean) .. 5 (infected, not repaired).
    virus_score: int | None = None
    #: The user's own addresses besides the envelope recipient (RFC 5230 §4.5).
    user_addresses: tuple[str, ...] = ()
    #: RFC 5233 §2: the character between user and detail.
    subaddress_separator: str = "+"
    #: ``(user, detail)`` of the envelope recipient as the directory resolved it, when known:
    #: RFC 5233 §4 leaves the split to the site, and the mailbox the mail reached is the truth
    #: (``alice+x@`` may be an address of its own).  ``None``: split at the separator.
    envelope_to_parts: tuple[str, str | None] | None = None
    #: Vacation periods are clamped to this range (RFC 5230 §4.1, RFC 6131 §2).
    vacation_min_seconds: int = 86400
    vacation_max_seconds: int = 90 * 86400
    extra: dict[str, object] = field(default_factory=dict)
