"""A POP3 session's view of INBOX: a numbered snapshot taken at login, and the maildrop lock.

RFC 1939 §4 numbers messages from 1 at the start of the TRANSACTION state and keeps those
numbers for the whole session: mail arriving meanwhile is not shown, deleted numbers stay
taken. So the session works on a snapshot of the INBOX UIDs rather than on live state, and
only its UPDATE state (QUIT) touches the core.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailserve.core.model import Mailbox

#: A line feed not preceded by a carriage return.
_BARE_LF = re.compile(rb"(?<!\r)\n")


class MaildropLocks:
    """Which accounts have a POP3 session in the TRANSACTION state.

    RFC 1939 §8 lets a server grant one exclusive-access lock per maildrop, and RFC 2449
    §8.1.2 names the refusal ``[IN-USE]``. One instance is shared by every POP3 listener of a
    server (POP3 and POP3S hold the same maildrops); it lives in memory only, so a crash can
    never leave a maildrop locked.
    """

    def __init__(self) -> None:
        self._held: set[int] = set()

    def acquire(self, account: int) -> bool:
        """Take the lock; ``False`` if another session holds it."""
        if account in self._held:
            return False
        self._held.add(account)
        return True

    def release(self, account: int) -> None:
        self._held.discard(account)

    def held(self, account: int) -> bool:
        return account in self._held


@dataclass
class MaildropMessage:
    """One numbered message of the snapshot."""

    number: int
    uid: int
    message_id: int
    blob_id: str
    #: Octets as transmitted (CRLF line ends), which is what LIST and STAT report (RFC 1939 §11).
    size: int
    unique_id: str
    deleted: bool = False
    retrieved: bool = False
    seen: bool = False


@dataclass
class Maildrop:
    """The snapshot of one account's INBOX for one session."""

    account: int
    mailbox: Mailbox
    messages: list[MaildropMessage] = field(default_factory=list)

    def get(self, number: int) -> MaildropMessage | None:
        """Message ``number`` unless it does not exist or is marked deleted (RFC 1939 §5)."""
        if 1 <= number <= len(self.messages):
            message = self.messages[number - 1]
            if not message.deleted:
                return message
        return None

    def live(self) -> list[MaildropMessage]:
        return [m for m in self.messages if not m.deleted]

    def reset(self) -> None:
        """RSET (RFC 1939 §5): unmark every message marked deleted."""
        for message in self.messages:
            message.deleted = False

    def deleted_uids(self) -> list[int]:
        return [m.uid for m in self.messages if m.deleted]

    def retrieved_unseen_uids(self) -> list[int]:
        return [m.uid for m in self.messages if m.retrieved and not m.deleted and not m.seen]


def unique_id(uidvalidity: int, message_id: int) -> str:
    """The UIDL unique-id of a message (RFC 1939 §7): stable across sessions and restarts.

    The core's message id never changes while the message exists (a MOVE keeps it) and is
    never reused within an account; prefixing the INBOX's UIDVALIDITY, which is chosen when
    the account is created, keeps ids distinct even if an account is deleted and re-created
    under the same name (so a client "leaving mail on the server" never mistakes a new message
    for one it already has). 16 hex digits, well inside RFC 1939's 0x21-0x7E, 1-70 octets.
    """
    return f"{uidvalidity & 0xFFFFFFFF:08x}{message_id & 0xFFFFFFFF:08x}"


def transmitted_size(raw_header: bytes, stored_size: int, read_all: Callable[[], bytes]) -> int:
    """The message size with CRLF line ends, as RETR sends it.

    Mail arriving over SMTP already has CRLF line ends, so its stored size is exact. A message
    stored with bare LF ends (some IMAP APPEND clients and imports) shows them already in its
    header block, cached at ingest; only such messages are read to count them.
    """
    if not _BARE_LF.search(raw_header):
        return stored_size
    raw = read_all()
    return len(raw) + len(_BARE_LF.findall(raw))


def load_maildrop(core: Any, account: int) -> Maildrop:
    """Take the snapshot of ``account``'s INBOX (blocking: call it in a thread).

    Reads the UID list, the message records and the header block cached at ingest; reads
    message bytes only for messages stored with bare LF line ends (see ``transmitted_size``).
    """
    inbox = core.find_mailbox(account, "INBOX")
    pairs = core.mailbox_uids(account, inbox.id)
    records = core.get_messages(account, [msgid for _, msgid in pairs])
    messages = []
    for (uid, msgid), record in zip(pairs, records, strict=True):
        if record is None:  # removed between the two reads
            continue
        try:
            header = core.get_parsed(record.blob_id).header
        except KeyError:
            header = b""
        size = transmitted_size(header, record.size, lambda b=record.blob_id: core.blobs.get(b))
        messages.append(
            MaildropMessage(
                number=len(messages) + 1,
                uid=uid,
                message_id=msgid,
                blob_id=record.blob_id,
                size=size,
                unique_id=unique_id(inbox.uidvalidity, msgid),
                seen=record.seen,
            )
        )
    return Maildrop(account, inbox, messages)
