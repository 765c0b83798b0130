"""Where log events go: text or JSON lines, to standard output or a file, above a level.

Protocol code logs structured events through ``twisted.logger`` with a ``session`` field;
this module only decides how they are written out.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "warning": LogLevel.warn, "error": LogLevel.error}


def make_observer(logging_config: Any, stream: io.TextIOBase | None = None) -> ILogObserver:
    """The observer ``[logging]`` asks for (``path = "-"``: standard output)."""
    if stream is None:
        if logging_config.path in (None, "-", ""):
            stream = sys.stdout
        else:
            stream = open(logging_config.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    if logging_config.format == "json":
        # One JSON object per line (not RFC 7464 record separators): what log collectors read.
        observer = jsonFileLogObserver(stream, recordSeparator="")
    else:
        observer = textFileLogObserver(stream)
    level = LEVELS.get(str(logging_config.level).lower(), LogLevel.info)
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])
