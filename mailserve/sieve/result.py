"""The outcome of running a script: the actions to perform (RFC 5228 §2.10)
and, with editheader, the header to deliver (RFC 5293)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Keep:
    """Store in INBOX (RFC 5228 §4.3); ``implicit`` for the implicit keep of
    §2.10.2.  ``flags`` come from :flags or the imap4flags internal variable."""

    flags: tuple[str, ...] = ()
    implicit: bool = False


@dataclass(frozen=True)
class FileInto:
    """Store in ``mailbox`` (RFC 5228 §4.1; :copy RFC 3894; :create RFC 5490 §3.2)."""

    mailbox: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False


@dataclass(frozen=True)
class Redirect:
    """Forward to ``address`` (RFC 5228 §4.2; :copy RFC 3894)."""

    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    """Refuse with a DSN/MDN carrying ``reason`` (RFC 5429 §2.2)."""

    reason: str


@dataclass(frozen=True)
class Ereject:
    """Refuse at SMTP level when possible (RFC 5429 §2.1)."""

    reason: str


@dataclass(frozen=True)
class Discard:
    """Silently drop (RFC 5228 §4.4)."""


@dataclass(frozen=True)
class Vacation:
    """An auto-reply to send (RFC 5230 §4).  After sending it, the delivery
    agent needs nothing more: the tracker was updated by the interpreter."""

    to: str
    from_address: str
    subject: str
    body: str
    mime: bool
    handle: str
    seconds: int
    in_reply_to: str = ""
    references: str = ""


@dataclass(frozen=True)
class AddHeader:
    """An addheader edit (RFC 5293 §4), recorded for logs; the effect is in
    ``SieveResult.headers``."""

    name: str
    value: str
    last: bool = False


@dataclass(frozen=True)
class DeleteHeader:
    """A deleteheader edit that removed ``count`` fields (RFC 5293 §5)."""

    name: str
    count: int


Action = Keep | FileInto | Redirect | Reject | Ereject | Discard | Vacation | AddHeader | DeleteHeader


@dataclass
class SieveResult:
    """Actions in execution order.  When implicit keep is in effect at the end
    (RFC 5228 §2.10.2), a ``Keep(implicit=True)`` is the last action.

    ``error`` is set when the script failed at run time; the actions are then
    only the implicit keep (RFC 5228 §2.10.6).  ``headers`` is the edited
    header list when editheader changed anything, else ``None``.
    """

    actions: list[Action] = field(default_factory=list)
    implicit_keep: bool = True
    error: str | None = None
    headers: list[tuple[str, str]] | None = None

    def of_type(self, kind: type) -> list:
        """Actions of one class, in order."""
        return [action for action in self.actions if isinstance(action, kind)]

    @property
    def deliveries(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(mailbox, flags)`` for every local store, keeps as ``INBOX``."""
        stores: list[tuple[str, tuple[str, ...]]] = []
        for action in self.actions:
            if isinstance(action, Keep):
                stores.append(("INBOX", action.flags))
            elif isinstance(action, FileInto):
                stores.append((action.mailbox, action.flags))
        return stores

    def header_bytes(self) -> bytes | None:
        """The edited header block to deliver in place of the original one."""
        if self.headers is None:
            return None
        lines = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        return lines.encode("utf-8", errors="surrogateescape")
