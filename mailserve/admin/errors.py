"""What an administrative operation can refuse, independent of how it was asked (REST or CLI).

Each class carries the machine-readable ``code`` the REST API puts in its JSON error body and the
HTTP status it maps to; the CLI prints ``str()`` only.  Directory and credential errors are mapped
to these by :func:`classify`, so callers handle one family of exceptions.
"""

from __future__ import annotations


class AdminError(Exception):
    """A refused operation; ``str()`` says what is wrong in words an administrator can act on."""

    code = "error"
    status = 400

    def __init__(self, message: str, field: str | None = None, **details: int | str) -> None:
        super().__init__(message)
        self.field = field
        #: More machine-readable facts about the error (e.g. ``line`` and ``column`` of a script
        #: error); the REST API adds them to its JSON error object.
        self.details = details


class InvalidRequest(AdminError):
    """The request is malformed or a value is unusable (HTTP 400)."""

    code = "invalid_request"
    status = 400


class InvalidScript(InvalidRequest):
    """A Sieve script does not compile (RFC 5228 §2.10.5): ``line`` and ``column`` say where."""

    code = "invalid_script"

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}", field="script", line=line, column=column)
        self.line = line
        self.column = column


class NotFound(AdminError):
    code = "not_found"
    status = 404


class Conflict(AdminError):
    """The operation clashes with existing state: a name in use, a domain still in use (409)."""

    code = "conflict"
    status = 409


class Forbidden(AdminError):
    code = "forbidden"
    status = 403


class TooLarge(AdminError):
    """A value is over a size limit of the server (413, RFC 9110 §15.5.14)."""

    code = "too_large"
    status = 413


class Unavailable(AdminError):
    """The part of the server this operation needs is not running in this build (503)."""

    code = "unavailable"
    status = 503


def classify(error: BaseException) -> AdminError | None:
    """The AdminError a lower layer's exception stands for, or ``None`` for a real bug."""
    from mailserve.core.errors import MailError, NoSuchAccount, NoSuchMailbox
    from mailserve.directory import directory
    from mailserve.directory.credentials import CredentialError, CredentialNotFound, TooManyCredentials
    from mailserve.sieve import scripts

    if isinstance(error, AdminError):
        return error
    if isinstance(error, directory.NotFound | CredentialNotFound | NoSuchAccount | NoSuchMailbox):
        return NotFound(str(error))
    if isinstance(error, directory.AlreadyExists | TooManyCredentials):
        return Conflict(str(error))
    if isinstance(error, directory.InvalidValue | CredentialError | MailError):
        return InvalidRequest(str(error))
    if isinstance(error, scripts.NoSuchScript):
        return NotFound(str(error))
    if isinstance(error, scripts.ScriptExists | scripts.ScriptIsActive | scripts.TooManyScripts):
        return Conflict(str(error))
    if isinstance(error, scripts.ScriptTooLarge):
        return TooLarge(str(error), field="script")
    if isinstance(error, scripts.ScriptError):
        return InvalidRequest(str(error), field="name")
    if isinstance(error, directory.DirectoryError):
        # The remaining directory refusals are about state (a domain still in use).
        return Conflict(str(error))
    return None
