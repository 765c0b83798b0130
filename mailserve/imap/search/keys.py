"""Search keys: the tree a search program parses into (RFC 9051 §6.4.4, RFC 5032, RFC 7162)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from mailserve.imap.search.sequence_set import SequenceSet


class SearchKey:
    """Base of the search key tree (RFC 9051 §6.4.4)."""


@dataclass(frozen=True)
class All(SearchKey):
    pass


@dataclass(frozen=True)
class FlagKey(SearchKey):
    """ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, KEYWORD x (``present``) and their UN- forms."""

    flag: str
    present: bool = True


@dataclass(frozen=True)
class RecentKey(SearchKey):
    """RECENT: the session's ``\\Recent`` (RFC 3501 §2.3.2); NEW and OLD are built from it."""


@dataclass(frozen=True)
class SetKey(SearchKey):
    """A sequence set (``uid=False``), ``UID`` set, or ``$`` (RFC 5182)."""

    numbers: SequenceSet
    uid: bool = False


@dataclass(frozen=True)
class SizeKey(SearchKey):
    """LARGER n (``larger``) / SMALLER n: RFC822.SIZE strictly greater / less."""

    size: int
    larger: bool


@dataclass(frozen=True)
class DateKey(SearchKey):
    """BEFORE/ON/SINCE (internal date) or SENTBEFORE/SENTON/SENTSINCE (``sent``).

    ``relation`` is ``"before"``, ``"on"`` or ``"since"``; times and zones are
    disregarded (RFC 9051 §6.4.4).
    """

    relation: str
    day: date
    sent: bool = False


@dataclass(frozen=True)
class AgeKey(SearchKey):
    """OLDER / YOUNGER n seconds (RFC 5032 §3), on the internal date."""

    seconds: int
    older: bool


@dataclass(frozen=True)
class HeaderKey(SearchKey):
    """HEADER name text, and FROM/TO/CC/BCC/SUBJECT: a substring of the field's value."""

    name: str
    text: str


@dataclass(frozen=True)
class TextKey(SearchKey):
    """BODY (``field="body"``) or TEXT (``"text"``): through the full-text index."""

    field: str
    text: str


@dataclass(frozen=True)
class ModSeqKey(SearchKey):
    """MODSEQ [entry type] n (RFC 7162 §3.1.5): mod-sequence at least ``modseq``."""

    modseq: int


@dataclass(frozen=True)
class NotKey(SearchKey):
    key: SearchKey


@dataclass(frozen=True)
class OrKey(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class AndKey(SearchKey):
    keys: tuple[SearchKey, ...]
