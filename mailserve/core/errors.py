"""What the core refuses, as exceptions each protocol maps to its own error reply."""


class MailError(Exception):
    """Base of every refusal by the core; ``str()`` is a message fit for a client."""


class QuotaExceeded(MailError):
    """Adding the message would pass the account's quota (RFC 9208 ``[OVERQUOTA]``)."""


class NoSuchMailbox(MailError):
    pass


class MailboxExists(MailError):
    pass


class InvalidMailboxName(MailError):
    pass


class MailboxHasChildren(MailError):
    pass


class MailboxNotDeletable(MailError):
    pass


class NoSuchMessage(MailError):
    pass


class NoSuchAccount(MailError):
    pass


class ModifiedSince(MailError):
    """A conditional STORE found messages changed after UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
