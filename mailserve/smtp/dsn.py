"""Delivery status notifications: RFC 3464 ``multipart/report`` messages to the sender.

A report has three parts (RFC 3462 / RFC 6522 §3): a human-readable explanation, the
``message/delivery-status`` fields (one per-message group, then one group per recipient,
RFC 3464 §2.2, §2.3) and the original message -- whole (``RET=FULL``) or its header only
(``RET=HDRS``, RFC 3461 §4.3).  Reports are sent from the null reverse-path so that they can
never cause reports of their own (RFC 5321 §4.5.5, RFC 3464 §2).

Internationalized mail (RFC 6533): when the sender or a recipient address is not ASCII, the
status part is ``message/global-delivery-status`` with ``utf-8`` address types for those
addresses (§3, §6.2), and an original whose header is not ASCII is returned as
``message/global`` or ``message/global-headers`` (§6.3, RFC 6532 §3.7).  Such a report can only
travel with SMTPUTF8: :func:`report_needs_smtputf8` says so.
"""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RecipientReport", "build_report", "report_needs_smtputf8"]

#: The original message is returned whole only up to this size; larger ones get headers only,
#: as Postfix's bounce_size_limit does, so a report cannot be bigger than needed.
MAX_RETURNED_MESSAGE = 50 * 1024

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
    "expanded": "Successful Mail Delivery Report",
}

_EXPLANATIONS = {
    "failed": "Your message could not be delivered to one or more recipients. It has been\r\n"
              "returned to you with the reasons below. This is a permanent error.",
    "delayed": "Your message has not been delivered yet to one or more recipients.\r\n"
               "Delivery will be retried; you do not need to send it again.",
    "delivered": "Your message was successfully delivered to the recipients below.",
    "relayed": "Your message was relayed to a system that does not report delivery status;\r\n"
               "no further notification is possible for the recipients below.",
    "expanded": "Your message was delivered to the recipients below.",
}


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's per-recipient fields (RFC 3464 §2.3)."""

    final_recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded (RFC 3464 §2.3.3)
    status: str  # RFC 3463 code, e.g. 5.1.1
    diagnostic: str | None = None  # "smtp; 550 5.1.1 ..." (RFC 3464 §2.3.6)
    remote_mta: str | None = None
    original_recipient: str | None = None  # from ORCPT: "rfc822;addr"
    will_retry_until: float | None = None
    last_attempt: float | None = None


def report_needs_smtputf8(sender: str, recipients: Sequence[RecipientReport]) -> bool:
    """Whether the report about ``recipients`` to ``sender`` carries UTF-8 addresses (RFC 6533)."""
    return not sender.isascii() or any(
        not r.final_recipient.isascii() or not (r.original_recipient or "").isascii() for r in recipients)


def _address_field(address: str) -> str:
    """``rfc822; addr``, or ``utf-8; addr`` for a non-ASCII address (RFC 6533 §3)."""
    return f"{'rfc822' if address.isascii() else 'utf-8'}; {address}"


def _header_only(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[:end + 2]


def _clean(text: str) -> str:
    """Field values must be one line of printable text."""
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


def build_report(
    reporting_mta: str,
    sender: str,
    recipients: Sequence[RecipientReport],
    original: bytes,
    envid: str | None = None,
    ret: str | None = None,
    arrival: float | None = None,
    now: float | None = None,
) -> bytes:
    """The complete report message to ``sender`` (RFC 3464), as wire bytes with CRLF line ends.

    All recipients should share one action kind; the subject and explanation follow the first.
    """
    if not recipients:
        raise ValueError("a report needs at least one recipient")
    now = time.time() if now is None else now
    international = report_needs_smtputf8(sender, recipients)
    original_international = not _header_only(original).isascii()
    action = recipients[0].action
    boundary = f"{uuid.uuid4().hex}/{reporting_mta}"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {_SUBJECTS.get(action, 'Delivery Status Notification')}",
        f"Date: {email.utils.formatdate(now, localtime=True)}",
        f"Message-ID: <{uuid.uuid4().hex}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {reporting_mta}.",
        "",
        _EXPLANATIONS.get(action, ""),
        "",
    ]
    for recipient in recipients:
        detail = f": {_clean(recipient.diagnostic)}" if recipient.diagnostic else ""
        lines.append(f"<{recipient.final_recipient}>{detail}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: message/{'global-' if international else ''}delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
    ]
    if envid:
        lines.append(f"Original-Envelope-Id: {_clean(envid)}")
    if arrival is not None:
        lines.append(f"Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}")
    for recipient in recipients:
        lines.append("")
        if recipient.original_recipient:
            original_recipient = _clean(recipient.original_recipient)
            if not original_recipient.isascii():
                original_recipient = _address_field(original_recipient.partition(";")[2].strip())
            lines.append(f"Original-Recipient: {original_recipient}")
        lines += [
            f"Final-Recipient: {_address_field(recipient.final_recipient)}",
            f"Action: {recipient.action}",
            f"Status: {recipient.status}",
        ]
        if recipient.remote_mta:
            lines.append(f"Remote-MTA: dns; {_clean(recipient.remote_mta)}")
        if recipient.diagnostic:
            lines.append(f"Diagnostic-Code: {_clean(recipient.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {email.utils.formatdate(recipient.last_attempt or now, localtime=True)}")
        if recipient.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {email.utils.formatdate(recipient.will_retry_until, localtime=True)}")
    lines.append("")
    full = (ret or "FULL").upper() == "FULL" and len(original) <= MAX_RETURNED_MESSAGE
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    if full:
        kind = "message/global" if original_international else "message/rfc822"
        third = (f"--{boundary}\r\nContent-Description: Undelivered Message\r\n"
                 f"Content-Type: {kind}\r\n\r\n").encode() + original
    else:
        kind = "message/global-headers" if original_international else "text/rfc822-headers"
        third = (f"--{boundary}\r\nContent-Description: Undelivered Message Headers\r\n"
                 f"Content-Type: {kind}\r\n\r\n").encode() + _header_only(original)
    if not third.endswith(b"\r\n"):
        third += b"\r\n"
    return head + third + f"\r\n--{boundary}--\r\n".encode()
