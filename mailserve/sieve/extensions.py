"""The Sieve extensions mailserve implements and the capability string
ManageSieve advertises (RFC 5804 §1.7: the ``SIEVE`` capability lists the
space-separated extension names a script may ``require``)."""

from __future__ import annotations

#: Every name a script may ``require`` (RFC 5228 §3.2), in advertisement order.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "encoded-character",
    "imap4flags",
    "vacation",
    "vacation-seconds",
    "body",
    "variables",
    "relational",
    "comparator-i;ascii-numeric",
    "subaddress",
    "copy",
    "include",
    "date",
    "index",
    "editheader",
    "mailbox",
    "duplicate",
    "spamtest",
    "spamtestplus",
    "virustest",
    "regex",
)

#: Extensions that imply others when required (RFC 5235 §3.3: spamtestplus
#: includes spamtest; RFC 6131 §2: vacation-seconds includes vacation).
IMPLIED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "spamtestplus": ("spamtest",),
    "vacation-seconds": ("vacation",),
}

#: The value of the ManageSieve ``SIEVE`` capability.
SIEVE_CAPABILITY = " ".join(SUPPORTED_EXTENSIONS)


def expand_requirements(names: set[str]) -> frozenset[str]:
    """``names`` plus every extension they imply."""
    result = set(names)
    for name in names:
        result.update(IMPLIED_EXTENSIONS.get(name, ()))
    return frozenset(result)
