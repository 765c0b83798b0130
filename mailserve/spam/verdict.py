"""What the spam filter is asked about and what it answers.

:class:`SpamContext` is what the SMTP session knows about a message's arrival;
:class:`SpamVerdict` is the composite score, the action it implies and every rule that
fired, rendered into the two header fields the issue asks for:

* ``X-Spam-Status: Yes, score=7.30 required=5.00 tests=BAYES_99=5.00, SPF_FAIL=2.00``
  (SpamAssassin's field, which Sieve scripts and mail clients already understand), and
* ``X-Spam-Result: BAYES_99 (5.00), SPF_FAIL (2.00)`` (Stalwart's field: every rule with
  its score, one per folded line).

Both list every rule that fired, so a verdict can always be explained.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["RuleHit", "SpamAction", "SpamContext", "SpamVerdict", "fold_header"]

#: RFC 5322 section 2.1.1: lines SHOULD be no longer than 78 characters.
FOLD_WIDTH = 78


class SpamAction(enum.Enum):
    """What to do with a message (thresholds in ``rules.toml``)."""

    DELIVER = "deliver"
    JUNK = "junk"
    DISCARD = "discard"
    REJECT = "reject"
    GREYLIST = "greylist-defer"


@dataclass(frozen=True)
class SpamContext:
    """The SMTP side of a message: who connected, what they said, who it is for.

    ``auth`` is the :class:`mailserve.mailauth.results.AuthVerdict` of the message (or
    ``None`` when mail authentication did not run); ``accounts`` are the local account ids
    of the recipients, whose own Bayes databases are consulted.
    """

    client_ip: str
    helo: str = ""
    mail_from: str = ""
    recipients: tuple[str, ...] = ()
    authenticated: bool = False
    auth: Any = None
    accounts: tuple[int, ...] = ()


@dataclass(frozen=True)
class RuleHit:
    """One rule that fired: its name, score and (for logs) what it saw."""

    rule: str
    score: float
    detail: str = ""


def fold_header(name: str, items: list[str], separator: str = ",") -> str:
    """A header value made of ``items``, folded at item boundaries (RFC 5322 section 2.2.3).

    Returns the value only (after ``name: ``), with CRLF + TAB between folded lines.
    """
    lines: list[str] = []
    current = ""
    prefix_length = len(name) + 2
    for index, item in enumerate(items):
        piece = item + (separator if index < len(items) - 1 else "")
        candidate = f"{current} {piece}" if current else piece
        width = len(candidate) + (prefix_length if not lines else 1)
        if current and width > FOLD_WIDTH:
            lines.append(current)
            current = piece
        else:
            current = candidate
    lines.append(current)
    return "\r\n\t".join(lines)


@dataclass(frozen=True)
class SpamVerdict:
    """The filter's answer for one message.

    ``score`` and ``hits`` are the message-level verdict.  ``by_account`` holds the verdicts
    of recipients whose own Bayes database scored the message differently; use
    :meth:`for_account` to get the verdict that applies to one recipient (its copy goes to
    Junk if *its* action says so).  ``bayes_probability`` is ``None`` when the classifier
    had not learned enough to speak.
    """

    score: float
    action: SpamAction
    hits: tuple[RuleHit, ...]
    required: float
    bayes_probability: float | None = None
    by_account: Mapping[int, SpamVerdict] = field(default_factory=lambda: MappingProxyType({}))
    greylisted_for: float = 0.0

    @property
    def is_spam(self) -> bool:
        return self.score >= self.required

    def for_account(self, account: int) -> SpamVerdict:
        return self.by_account.get(account, self)

    @property
    def rules(self) -> dict[str, float]:
        return {hit.rule: hit.score for hit in self.hits}

    @property
    def status_header(self) -> str:
        """The ``X-Spam-Status`` value (SpamAssassin's format, with each rule's score)."""
        verdict = "Yes" if self.is_spam else "No"
        tests = [f"{hit.rule}={hit.score:.2f}" for hit in self.hits] or ["NONE"]
        head = f"{verdict}, score={self.score:.2f} required={self.required:.2f} action={self.action.value}"
        # Fold between the head and the tests and between tests, never inside one.
        items = [head] + [("tests=" if i == 0 else "") + t + ("," if i < len(tests) - 1 else "")
                          for i, t in enumerate(tests)]
        return fold_header("X-Spam-Status", items, separator="")

    @property
    def result_header(self) -> str:
        """The ``X-Spam-Result`` value (Stalwart's format): ``RULE (score)`` for each rule."""
        items = [f"{hit.rule} ({hit.score:.2f})" for hit in self.hits] or ["NONE (0.00)"]
        return fold_header("X-Spam-Result", items)

    def header_fields(self) -> list[tuple[str, str]]:
        """The fields to add to the delivered copy, as ``(name, folded value)``."""
        return [("X-Spam-Status", self.status_header), ("X-Spam-Result", self.result_header)]

    def header_bytes(self) -> bytes:
        return b"".join(f"{name}: {value}\r\n".encode() for name, value in self.header_fields())
