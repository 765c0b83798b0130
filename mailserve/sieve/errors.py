"""Errors raised while compiling or running a Sieve script.

Compile-time errors carry the line and column of the offending token so that
ManageSieve ``PUTSCRIPT``/``CHECKSCRIPT`` can report them to the user at upload
time (RFC 5804 §2.6 asks for a human-readable reason; a position makes it useful).
"""

from __future__ import annotations


class SieveError(Exception):
    """Base class for every Sieve error."""


class SieveSyntaxError(SieveError):
    """The script is not valid Sieve: bad syntax, unknown command/test/tag,
    wrong arguments or a missing ``require`` (RFC 5228 §2.10.5, §3.2)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.message = message
        self.line = line
        self.column = column


class SieveRuntimeError(SieveError):
    """The script failed while running (RFC 5228 §2.10.6): the caller falls
    back to implicit keep and reports the reason."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"{where}{message}")
        self.message = message
        self.line = line
        self.column = column


class SieveLimitExceeded(SieveRuntimeError):
    """A configured resource limit (``SieveLimits``) was hit at run time."""
