"""How configuration problems are reported: ``file:key.path: message``, one issue per mistake.

An operator fixing a configuration wants every mistake at once, each named by the TOML key it is
under, with a hint when a key is misspelt; these are the types and the message helpers every other
part of :mod:`mailserve.config` uses to say what is wrong.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Issues and errors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration: where it is and what is wrong.

    ``key`` is the dotted TOML path (``server.listener.imap.bind[1]``), or empty for problems with the
    file as a whole (unreadable, not TOML).
    """

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}:{self.key}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """The configuration is not usable; ``issues`` lists every problem found in one pass."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class InvalidValue(ValueError):
    """Raised by a kind when a single value is unusable; the loader turns it into a ConfigIssue."""



KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_key_path(path: KeyPath) -> str:
    """Render a key path the way it would be written in TOML (quoting keys that need it)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if len(part) > 100:
            part = part[:97] + "..."
        piece = part if _BARE_KEY.fullmatch(part) else _toml_string(part)
        text = f"{text}.{piece}" if text else piece
    return text


def _toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


# --------------------------------------------------------------------------------------------------
# Describing values in messages
# --------------------------------------------------------------------------------------------------


def _short(text: str, limit: int = 60) -> str:
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _describe(value: object) -> str:
    """Name a TOML value's type and show it, for "expected X, got Y" messages."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        return f"string {_short(value)}"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return f"{type(value).__name__} {_short(str(value))}"


def _format_size(size: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _format_duration(seconds: float) -> str:
    if seconds >= 1e9:
        return f"{seconds:g}s"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def _suggestion(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
