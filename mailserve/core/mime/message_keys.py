"""Message ids, dates, subjects: the threading and sorting keys (RFC 5256).

Derived once at ingest so SORT, THREAD and JMAP never parse these fields again.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from email.utils import parsedate_tz

from mailserve.core.mime.encoded_words import decode_header_text
from mailserve.core.mime.limits import MAX_FIELD_VALUE

_MSG_ID = re.compile(r"<\s*([^<>\s]+?)\s*>")


def parse_message_ids(value: str | None) -> tuple[str, ...]:
    """The msg-ids in a Message-ID / In-Reply-To / References value, without ``<>``.

    RFC 5322 §3.6.4; phrases and comments between ids (obsolete syntax) are skipped.
    """
    if not value:
        return ()
    return tuple(_MSG_ID.findall(value[:MAX_FIELD_VALUE]))


def _message_id(value: str | None) -> str | None:
    """The Message-ID; a bare id without brackets is accepted if it looks like one."""
    ids = parse_message_ids(value)
    if ids:
        return ids[0]
    if value:
        bare = value.strip()
        if bare and "@" in bare and not any(c.isspace() for c in bare):
            return bare
    return None


def parse_date(value: str | None) -> int | None:
    """Unix time of an RFC 5322 §3.3 date (obsolete forms accepted), or None.

    A date without zone is taken as UTC (``-0000``, "no information about the local
    time zone").
    """
    if not value:
        return None
    try:
        parsed = parsedate_tz(value[:256])
    except Exception:  # noqa: BLE001 - the email package raises many types on junk
        return None
    if parsed is None:
        return None
    try:
        year, month, day, hour, minute, second = parsed[:6]
        # datetime validates every field; leap seconds (RFC 5322 allows 60) are clamped
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
        offset = parsed[9] or 0
        if abs(offset) > 99 * 3600 + 59 * 60:
            return None
        return calendar.timegm(moment.timetuple()) - offset
    except (OverflowError, ValueError, TypeError):
        return None


_BLOB = r"\[[^\[\]]*\][ \t]*"
_SUBJ_LEADER = re.compile(
    r"(?:(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:|[ \t])", re.IGNORECASE
)
_SUBJ_BLOB = re.compile(_BLOB)
_WSP_RUN = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str | None) -> str:
    """The base subject of RFC 5256 §2.1, used by SORT SUBJECT and THREAD.

    Steps as numbered in the RFC: (1) decode encoded words and collapse whitespace,
    (2) strip ``(fwd)`` and whitespace trailers, (3) strip ``Re:``/``Fw:``/``Fwd:``
    leaders with their blobs, (4) strip a leading ``[blob]`` unless nothing would be left,
    (5) repeat 3-4, (6) unwrap ``[fwd: ...]`` and go back to 2.

    The text is never copied while stripping (start and end indices move instead), and a
    run of blobs is removed at once, so a hostile subject costs linear time.
    """
    if not subject:
        return ""
    text = _WSP_RUN.sub(" ", decode_header_text(subject[:MAX_FIELD_VALUE]))  # step 1
    start, end = 0, len(text)
    while True:
        while end > start:  # step 2
            if text[end - 1] in " \t":
                end -= 1
            elif end - start >= 5 and text[end - 5:end].lower() == "(fwd)":
                end -= 5
            else:
                break
        while start < end:  # step 3
            match = _SUBJ_LEADER.match(text, start, end)
            if match is None:
                break
            start = match.end()
        # Step 4, repeated by step 5.  A leader failed here, and it would fail at every
        # blob of the run that starts here too (it would have matched the whole run), so
        # step 3 cannot apply again: remove the run's blobs one by one while something is
        # left after each.
        match = _SUBJ_BLOB.match(text, start, end)
        while match is not None and match.end() < end:
            start = match.end()
            match = _SUBJ_BLOB.match(text, start, end)
        # step 6
        if end - start >= 6 and text[start:start + 5].lower() == "[fwd:" and text[end - 1] == "]":
            start += 5
            end -= 1
            continue
        return text[start:end]
