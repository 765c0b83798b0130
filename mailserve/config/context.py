"""The state of one configuration load, where its issues are collected.

Kinds and sections report into it instead of raising, so one pass finds every problem; it lives
only as long as one ``load_config``/``parse_config`` call, so loads never share state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mailserve.config.errors import ConfigError, ConfigIssue, KeyPath, format_key_path

#: Issues listed in one ConfigError; past this, the rest are only counted, so a garbage file
#: cannot make validation spend its time composing hundreds of thousands of messages.
MAX_REPORTED_ISSUES = 100


@dataclass
class LoadContext:
    """State of one load: where issues go and what later sections need from earlier ones.

    Kinds and ``Section.check`` receive it; nothing outside one ``load_config``/``parse_config`` call
    keeps it, so loads never share state.
    """

    source: str
    env: Mapping[str, str]
    cwd: str
    issues: list[ConfigIssue] = field(default_factory=list)
    #: Count of values found unusable so far (reported here or during substitution); a parser compares
    #: it before and after a value to learn whether anything inside that value failed.
    failures: int = 0
    #: Issues found after MAX_REPORTED_ISSUES were listed.
    unreported: int = 0
    data_dir: str = "var"
    hostname: str = "localhost"

    def report(self, path: KeyPath, message: str | Callable[[], str]) -> None:
        """Record an issue; ``message`` may be a function, called only if the issue will be listed."""
        self.failures += 1
        if len(self.issues) >= MAX_REPORTED_ISSUES:
            self.unreported += 1
            return
        text = message() if callable(message) else message
        self.issues.append(ConfigIssue(self.source, format_key_path(path), text))

    def error(self) -> ConfigError:
        issues = list(self.issues)
        if self.unreported:
            issues.append(ConfigIssue(self.source, "", f"{self.unreported} more problems not shown"))
        return ConfigError(issues)

    def resolve_path(self, path: str) -> str:
        """Absolute form of ``path``: ``~`` expanded, relative paths taken from the load-time cwd."""
        return os.path.normpath(os.path.join(self.cwd, os.path.expanduser(path)))
