"""Responses (RFC 9051 §7.3.5 SEARCH, RFC 4731 ESEARCH, RFC 5182 SEARCHRES)."""

from __future__ import annotations

from collections.abc import Sequence

from mailserve.imap.search.sequence_set import sequence_set_text


def format_search(numbers: Sequence[int], modseq: int | None = None) -> bytes:
    """``* SEARCH 2 3 5`` with ``(MODSEQ n)`` when the search used MODSEQ and matched."""
    line = b"* SEARCH"
    if numbers:
        line += b" " + b" ".join(b"%d" % n for n in numbers)
        if modseq:
            line += b" (MODSEQ %d)" % modseq
    return line


def _quoted_tag(tag: str) -> bytes:
    return b'"' + tag.encode("ascii", "replace").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def format_esearch(
    numbers: Sequence[int],
    returns: Sequence[str],
    tag: str | None = None,
    uid: bool = False,
    modseq: int | None = None,
) -> bytes | None:
    """The ``* ESEARCH`` line for RETURN options (RFC 4731 §3.1), or None.

    MIN/MAX/ALL are left out when nothing matched; COUNT is always given.  When SAVE is
    the only option there is no ESEARCH response at all (RFC 5182 §2.4).
    """
    wanted = [r.upper() for r in returns] or ["ALL"]
    if wanted == ["SAVE"]:
        return None
    line = b"* ESEARCH"
    if tag is not None:
        line += b" (TAG " + _quoted_tag(tag) + b")"
    if uid:
        line += b" UID"
    ordered = sorted(numbers)
    if "MIN" in wanted and ordered:
        line += b" MIN %d" % ordered[0]
    if "MAX" in wanted and ordered:
        line += b" MAX %d" % ordered[-1]
    if "ALL" in wanted and ordered:
        line += b" ALL " + sequence_set_text(ordered).encode("ascii")
    if "COUNT" in wanted:
        line += b" COUNT %d" % len(ordered)
    if modseq and ordered:
        line += b" MODSEQ %d" % modseq
    return line


def saved_result(uids: Sequence[int], returns: Sequence[str] | None) -> list[int] | None:
    """The UIDs RETURN (SAVE ...) stores for ``$`` (RFC 5182 §2.4), or None without SAVE.

    With MIN and/or MAX but neither ALL nor COUNT, only those messages are saved.
    """
    if not returns or "SAVE" not in returns:
        return None
    ordered = sorted(uids)
    if "ALL" in returns or "COUNT" in returns or not ({"MIN", "MAX"} & set(returns)):
        return ordered
    out = []
    if ordered and "MIN" in returns:
        out.append(ordered[0])
    if ordered and "MAX" in returns and ordered[-1] not in out:
        out.append(ordered[-1])
    return out
