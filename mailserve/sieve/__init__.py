"""Sieve mail filtering (RFC 5228 and extensions): parser, validator and
interpreter.  ``compile_script`` checks a script at upload time;
``run`` applies it to one message for one recipient."""

from mailserve.sieve.environment import (
    IResponseTracker,
    MemoryResponseTracker,
    SieveEnvironment,
)
from mailserve.sieve.errors import (
    SieveError,
    SieveLimitExceeded,
    SieveRuntimeError,
    SieveSyntaxError,
)
from mailserve.sieve.extensions import SIEVE_CAPABILITY, SUPPORTED_EXTENSIONS
from mailserve.sieve.interpreter import Script, SieveLimits, compile_script, run
from mailserve.sieve.message import SieveMessage
from mailserve.sieve.result import (
    AddHeader,
    DeleteHeader,
    Discard,
    Ereject,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)

__all__ = [
    "SIEVE_CAPABILITY",
    "SUPPORTED_EXTENSIONS",
    "AddHeader",
    "DeleteHeader",
    "Discard",
    "Ereject",
    "FileInto",
    "IResponseTracker",
    "Keep",
    "MemoryResponseTracker",
    "Redirect",
    "Reject",
    "Script",
    "SieveEnvironment",
    "SieveError",
    "SieveLimitExceeded",
    "SieveLimits",
    "SieveMessage",
    "SieveResult",
    "SieveRuntimeError",
    "SieveSyntaxError",
    "Vacation",
    "compile_script",
    "run",
]
