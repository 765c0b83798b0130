"""Configuration: TOML text in, typed and immutable configuration objects out.

Why it is built this way
------------------------
A mail server is configured once, at start-up, by an operator who wants to hear about *every* mistake
in one go (``mailserve validate`` and twistd print them as ``file:key.path: message``), and the rest of
the process wants plain typed values it can trust: sizes in bytes, durations in seconds, absolute paths,
parsed bind addresses. So loading is three passes over the TOML document:

1. **Substitution** (before any validation, in every string value, arrays included):
   ``%{env:NAME}%`` (an error naming the key if ``NAME`` is unset), ``%{env:NAME:default}%`` and
   ``%{file:PATH}%`` (the file's contents, one trailing newline stripped -- for secrets kept out of the
   config file). Substituted text is not scanned again, so a value cannot smuggle in another
   substitution. A value that came from a substitution may stand for an integer or boolean
   (``max_connections = "%{env:MAX_CONN:1000}%"``), because environment variables are always strings.
2. **Validation**, section by section: every section is a frozen dataclass whose fields are declared
   with :func:`option` -- the key's type (a *kind*), its default (written the way a user would write it
   in TOML, so ``"50MiB"`` rather than ``52428800``) and its documentation. Unknown keys, wrong types
   and out-of-range values are collected as :class:`ConfigIssue` objects; nothing stops at the first.
3. **Cross-checks** (``Section.check``) for rules spanning several keys (certificate and key both or
   neither, no two listeners on one address, ...); they run only for sections whose keys were valid,
   so one mistake never reports twice.

Adding a key is one line in the section class, for example in :class:`SMTPConfig`::

    max_hops: int = option(Int(1, 500), 50, "Maximum number of Received: fields (RFC 5321 §6.3).")

and the key is then parsed, validated, documented in ``mailserve init``'s rendered file and listed in
"did you mean" suggestions with no other change. A new section is a new ``Section`` dataclass plus one
line on :class:`Config` (or on its parent section)::

    dkim: DKIMConfig = field(metadata=nested(DKIMConfig, "DKIM signing."))

Conventions
-----------
- Sizes are integers (bytes) or strings with a unit: ``B``; ``K``/``KiB``, ``M``/``MiB``, ``G``/``GiB``,
  ``T``/``TiB`` are powers of 1024 (as in Dovecot and Postfix); ``KB``, ``MB``, ``GB``, ``TB`` are SI powers
  of 1000. Parsed sizes are ``int`` bytes.
- Durations are numbers (seconds) or strings such as ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"5d"``,
  ``"1w"`` or combinations like ``"1h30m"``. Parsed durations are ``float`` seconds, ready for
  ``reactor.callLater``.
- Relative paths (in values and in ``%{file:...}%``) are resolved against the current working directory
  *at load time*, and ``~`` is expanded; the resulting objects hold absolute paths only. Paths that
  default to somewhere under ``server.data_dir`` follow ``data_dir``.
- Loading is blocking (it reads files and may call ``socket.getfqdn()``): do it before the reactor runs,
  or in ``deferToThread``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from twisted.logger import LogLevel

__all__ = [
    "PROTOCOLS",
    "REQUIRED",
    "STARTTLS_PROTOCOLS",
    "AuthConfig",
    "BindAddress",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DNSConfig",
    "FilesystemBlobConfig",
    "HTTPConfig",
    "IMAPConfig",
    "InvalidValue",
    "Kind",
    "LMDBConfig",
    "ListenerConfig",
    "ListenerTLSConfig",
    "LoadContext",
    "LoggingConfig",
    "MailAuthConfig",
    "ManageSieveConfig",
    "POP3Config",
    "SMTPConfig",
    "SNICertificateConfig",
    "SearchIndexConfig",
    "Section",
    "ServerConfig",
    "SpamConfig",
    "StorageConfig",
    "TLSConfig",
    "default_config",
    "load_config",
    "nested",
    "option",
    "parse_config",
    "render_default_config",
]

#: A configuration file larger than this is refused before parsing, so a hostile or mistaken file
#: (a log, a disk image) cannot exhaust memory.
MAX_CONFIG_FILE_SIZE = 4 * 1024 * 1024
#: Largest file ``%{file:PATH}%`` will read; it is meant for secrets and single values.
MAX_SUBSTITUTED_FILE_SIZE = 1024 * 1024
#: Issues listed in one ConfigError; past this, the rest are only counted, so a garbage file
#: cannot make validation spend its time composing hundreds of thousands of messages.
MAX_REPORTED_ISSUES = 100
#: Largest PEM file accepted for certificates and keys (a long chain is still only tens of KiB).
MAX_PEM_FILE_SIZE = 1024 * 1024

#: Every protocol a listener can speak.
PROTOCOLS = ("smtp", "submission", "imap", "pop3", "managesieve", "http")
#: Protocols with an in-band TLS upgrade: SMTP/submission (RFC 3207), IMAP (RFC 9051 §6.2.1),
#: POP3 (RFC 2595 §4), ManageSieve (RFC 5804 §2.2). HTTP has none (RFC 2817 upgrade is not used).
STARTTLS_PROTOCOLS = frozenset({"smtp", "submission", "imap", "pop3", "managesieve"})


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


class _SubstitutedStr(str):
    """A string produced by ``%{...}%`` substitution; numeric kinds may read it as a number."""


class _Unusable:
    """Marks a value whose substitution failed (already reported), so validation skips it."""

    def __repr__(self) -> str:
        return "<unusable>"


_UNUSABLE = _Unusable()


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


# --------------------------------------------------------------------------------------------------
# Kinds: one class per type of value, each parsing a raw TOML value into the typed one
# --------------------------------------------------------------------------------------------------


def _coerce_substituted(value: object) -> object:
    """Let a substituted string stand for the integer, float or boolean it spells."""
    if not isinstance(value, _SubstitutedStr):
        return value
    text = value.strip()
    if re.fullmatch(r"[+-]?[0-9]{1,18}", text):
        return int(text)
    if re.fullmatch(r"[+-]?[0-9]{1,18}\.[0-9]{1,9}", text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return str(value)


class Kind:
    """The type of a configuration value: ``parse`` turns raw TOML into the typed value or raises."""

    expected = "a value"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> Any:
        raise NotImplementedError

    def type_error(self, value: object) -> InvalidValue:
        return InvalidValue(f"expected {self.expected}, got {_describe(value)}")


def _check_range(value: float, minimum: float | None, maximum: float | None,
                 show: Callable[[Any], str] = str) -> None:
    if minimum is not None and value < minimum:
        raise InvalidValue(f"must be at least {show(minimum)}, got {show(value)}")
    if maximum is not None and value > maximum:
        raise InvalidValue(f"must be at most {show(maximum)}, got {show(value)}")


class Int(Kind):
    """An integer within ``[minimum, maximum]``."""

    expected = "an integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> int:
        value = _coerce_substituted(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.type_error(value)
        _check_range(value, self.minimum, self.maximum)
        return value


class Bool(Kind):
    """``true`` or ``false`` (TOML booleans; strings like "yes" are refused as ambiguous)."""

    expected = "a boolean (true or false)"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> bool:
        value = _coerce_substituted(value)
        if not isinstance(value, bool):
            raise self.type_error(value)
        return value


class Str(Kind):
    """Free text, optionally required to be non-empty and bounded in length."""

    expected = "a string"

    def __init__(self, *, allow_empty: bool = True, max_length: int = 4096) -> None:
        self.allow_empty = allow_empty
        self.max_length = max_length

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.type_error(value)
        if not value and not self.allow_empty:
            raise InvalidValue("must not be empty")
        if len(value) > self.max_length:
            raise InvalidValue(f"is too long ({len(value)} characters; at most {self.max_length})")
        if "\x00" in value:
            raise InvalidValue("must not contain NUL characters")
        return str(value)


class Choice(Kind):
    """One of a fixed set of words (case-insensitive), with optional aliases."""

    expected = "a string"

    def __init__(self, choices: Sequence[str], aliases: Mapping[str, str] | None = None) -> None:
        self.choices = tuple(choices)
        self.aliases = dict(aliases or {})

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.type_error(value)
        word = value.strip().lower()
        word = self.aliases.get(word, word)
        if word not in self.choices:
            listed = ", ".join(repr(choice) for choice in self.choices)
            raise InvalidValue(
                f"unknown value {_short(value)}; expected one of {listed}"
                + _suggestion(word, self.choices)
            )
        return word


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}
# Digit counts are bounded: a number is never more than 18 digits, so huge strings fail the pattern
# instead of reaching int() (which refuses more than 4300 digits) or overflowing a float.
_SIZE_TEXT = re.compile(r"\s*([0-9]{1,18}(?:\.[0-9]{1,9})?)\s*([A-Za-z]*)\s*")


class Size(Kind):
    """A byte count: an integer, or a number with a unit ("25MiB", "10M", "1GB"); see module doc."""

    expected = "a size (bytes, or a string such as '512KiB', '25MiB', '1GB')"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> int:
        value = _coerce_substituted(value)
        if isinstance(value, bool):
            raise self.type_error(value)
        if isinstance(value, int):
            size = value
        elif isinstance(value, str):
            match = _SIZE_TEXT.fullmatch(value)
            factor = _SIZE_UNITS.get(match.group(2).lower()) if match else None
            if match is None or factor is None:
                raise InvalidValue(
                    f"invalid size {_short(value)}; expected bytes as an integer or a number with a "
                    "unit: B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)"
                )
            size = int(float(match.group(1)) * factor) if "." in match.group(1) else (
                int(match.group(1)) * factor)
        else:
            raise self.type_error(value)
        if size < 0:
            raise InvalidValue(f"must not be negative, got {size}")
        _check_range(size, self.minimum, self.maximum, _format_size)
        return size


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"([0-9]{1,18}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_TEXT = re.compile(r"\s*(?:[0-9]{1,18}(?:\.[0-9]{1,9})?\s*(?:ms|s|m|h|d|w)\s*){1,10}", re.IGNORECASE)


class Duration(Kind):
    """A span of time: seconds as a number, or "500ms", "30s", "5m", "2h", "5d", "1w", "1h30m"."""

    expected = "a duration (seconds, or a string such as '30s', '5m', '2h', '5d')"

    def __init__(self, minimum: float | None = 0, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> float:
        value = _coerce_substituted(value)
        if isinstance(value, bool):
            raise self.type_error(value)
        if isinstance(value, (int, float)):
            seconds = float(value)
            if not math.isfinite(seconds):
                raise InvalidValue(f"must be a finite number of seconds, got {value!r}")
        elif isinstance(value, str):
            if not _DURATION_TEXT.fullmatch(value):
                raise InvalidValue(
                    f"invalid duration {_short(value)}; expected seconds as a number or a string "
                    "with units ms, s, m, h, d, w such as '30s', '5m', '2h', '5d' or '1h30m'"
                )
            seconds = sum(float(number) * _DURATION_UNITS[unit.lower()]
                          for number, unit in _DURATION_PART.findall(value))
        else:
            raise self.type_error(value)
        if seconds < 0:
            raise InvalidValue(f"must not be negative, got {seconds:g}")
        _check_range(seconds, self.minimum, self.maximum, _format_duration)
        return seconds


class Path(Kind):
    """A filesystem path, made absolute against the load-time working directory.

    ``optional``: the empty string means "not set" and parses to ``None``. ``must_exist``: the path must
    name a readable regular file. ``pem``: that file must contain a PEM block (RFC 7468), which catches
    a DER file or a swapped certificate/key path early with a clear message.
    """

    expected = "a path (string)"

    def __init__(self, *, optional: bool = False, must_exist: bool = False, pem: bool = False) -> None:
        self.optional = optional
        self.must_exist = must_exist
        self.pem = pem

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str | None:
        if not isinstance(value, str):
            raise self.type_error(value)
        if not value:
            if self.optional:
                return None
            raise InvalidValue("must not be empty")
        if "\x00" in value:
            raise InvalidValue("must not contain NUL characters")
        resolved = ctx.resolve_path(value)
        if self.must_exist:
            _check_readable_file(resolved, pem=self.pem)
        return resolved


def _check_readable_file(path: str, *, pem: bool) -> None:
    if not os.path.exists(path):
        raise InvalidValue(f"file {path!r} does not exist")
    if not os.path.isfile(path):
        raise InvalidValue(f"{path!r} is not a regular file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAX_PEM_FILE_SIZE + 1)
    except OSError as exc:
        raise InvalidValue(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if pem:
        if len(head) > MAX_PEM_FILE_SIZE:
            raise InvalidValue(f"{path!r} is larger than {_format_size(MAX_PEM_FILE_SIZE)}; not a PEM file?")
        if b"-----BEGIN " not in head:
            raise InvalidValue(f"{path!r} is not a PEM file (no '-----BEGIN' line; RFC 7468)")


class LogPath(Path):
    """A log destination: ``"-"`` for standard output (journald, containers), else a file path."""

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str | None:
        if value == "-":
            return "-"
        return super().parse(value, ctx, path)


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class Hostname(Kind):
    """A DNS name in ASCII (A-label) form, as RFC 5321 §2.3.5 requires for domains on the wire.

    ``optional``: "" is allowed; ``wildcard``: a leading ``*.`` label is allowed (for SNI, RFC 6125 §6.4.3);
    ``allow_ip``: an IP address literal is accepted too (for smarthosts).
    """

    expected = "a host name (string)"

    def __init__(self, *, optional: bool = False, wildcard: bool = False, allow_ip: bool = False) -> None:
        self.optional = optional
        self.wildcard = wildcard
        self.allow_ip = allow_ip

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.type_error(value)
        if not value and self.optional:
            return ""
        if self.allow_ip:
            try:
                return str(ipaddress.ip_address(value.strip("[]")))
            except ValueError:
                pass
        name = value.strip().lower().rstrip(".")
        labels = name.split(".")
        if self.wildcard and labels[0] == "*" and len(labels) > 1:
            labels = labels[1:]
        if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            hint = ""
            if any(ord(char) > 127 for char in name):
                hint = " (write internationalised names in their xn-- form)"
            raise InvalidValue(f"invalid host name {_short(value)}{hint}")
        return name


class URL(Kind):
    """An absolute http(s) URL, stored with a trailing slash so paths can be appended."""

    expected = "a URL (string)"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.type_error(value)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidValue(f"invalid URL {_short(value)}; expected an absolute http:// or https:// URL")
        if parts.query or parts.fragment:
            raise InvalidValue(f"URL {_short(value)} must not have a query or fragment")
        return value if value.endswith("/") else value + "/"


class Network(Kind):
    """An IP network in CIDR notation ("10.0.0.0/8", "::1/128"); a bare address means one host."""

    expected = "a network (string such as '10.0.0.0/8')"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if not isinstance(value, str):
            raise self.type_error(value)
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise InvalidValue(f"invalid network {_short(value)}; expected an address or CIDR block") from None


@dataclass(frozen=True, order=True)
class BindAddress:
    """One socket address a listener binds: an IP literal and a port (0 = any free port)."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def is_wildcard(self) -> bool:
        return ipaddress.ip_address(self.host).is_unspecified

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


class Bind(Kind):
    """A "host:port" listening address; IPv6 in brackets ("[::1]:143"); host must be an IP literal.

    Host names are refused because what they resolve to can change between validation and bind.
    """

    expected = "an address string such as '127.0.0.1:143' or '[::]:143'"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> BindAddress:
        if not isinstance(value, str):
            raise self.type_error(value)
        match = re.fullmatch(r"\[([^\]]*)\]:([^:]*)|([^:\[\]]*):([^:]*)", value.strip())
        if match is None:
            raise InvalidValue(f"invalid address {_short(value)}; expected 'host:port' (IPv6 as '[::1]:143')")
        host = match.group(1) if match.group(1) is not None else match.group(3)
        port_text = match.group(2) if match.group(1) is not None else match.group(4)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise InvalidValue(
                f"invalid address {_short(value)}: {host!r} is not an IP address "
                "(use 0.0.0.0 or [::] for all interfaces)"
            ) from None
        if address.version == 6 and match.group(1) is None:
            raise InvalidValue(f"invalid address {_short(value)}: IPv6 addresses need brackets, as '[::1]:143'")
        if address.version == 4 and match.group(1) is not None:
            raise InvalidValue(f"invalid address {_short(value)}: only IPv6 addresses go in brackets")
        if not re.fullmatch(r"[0-9]{1,5}", port_text):
            raise InvalidValue(f"invalid port {_short(port_text)} in {_short(value)}; expected 0..65535")
        port = int(port_text)
        if port > 65535:
            raise InvalidValue(f"invalid port {port} in {_short(value)}; expected 0..65535")
        return BindAddress(str(address), port)


class ListOf(Kind):
    """An array of values of one kind; each element's problem is reported at ``key[index]``.

    ``allow_single``: a lone scalar is accepted as a one-element list (``bind = "0.0.0.0:25"``).
    """

    def __init__(self, item: Kind, *, allow_single: bool = False, allow_empty: bool = True,
                 max_items: int = 1000) -> None:
        self.item = item
        self.allow_single = allow_single
        self.allow_empty = allow_empty
        self.max_items = max_items
        self.expected = f"an array of {item.expected}" + (" or a single one" if allow_single else "")

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> tuple[Any, ...]:
        if self.allow_single and not isinstance(value, (list, tuple, Mapping)):
            return (self.item.parse(value, ctx, path),)
        if not isinstance(value, (list, tuple)):
            raise self.type_error(value)
        if not value and not self.allow_empty:
            raise InvalidValue("must not be empty")
        if len(value) > self.max_items:
            raise InvalidValue(f"has {len(value)} items; at most {self.max_items} are allowed")
        items = []
        for index, element in enumerate(value):
            if element is _UNUSABLE:
                ctx.failures += 1
                continue
            try:
                items.append(self.item.parse(element, ctx, (*path, index)))
            except InvalidValue as exc:
                ctx.report((*path, index), str(exc))
        return tuple(items)


class Subsection(Kind):
    """A nested table with its own section class (``[storage.lmdb]``)."""

    expected = "a table"

    def __init__(self, section: type[Section]) -> None:
        self.section = section

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> Section:
        if not isinstance(value, Mapping):
            raise self.type_error(value)
        return _parse_section(self.section, value, ctx, path)


class NamedTables(Kind):
    """Any number of tables under free names (``[server.listener.ID]``), parsed to a tuple.

    The name is stored in the section's ``name_field``; ``name_kind`` validates and normalises it.
    Entries with problems are reported and left out, so cross-checks see only sound entries.
    """

    expected = "a table of tables"

    def __init__(self, section: type[Section], name_field: str, name_kind: Kind, max_entries: int = 1000) -> None:
        self.section = section
        self.name_field = name_field
        self.name_kind = name_kind
        self.max_entries = max_entries

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> tuple[Any, ...]:
        if not isinstance(value, Mapping):
            raise self.type_error(value)
        if len(value) > self.max_entries:
            raise InvalidValue(f"has {len(value)} entries; at most {self.max_entries} are allowed")
        entries = []
        seen: set[str] = set()
        for name, table in value.items():
            here = (*path, name)
            try:
                normalised = self.name_kind.parse(name, ctx, here)
            except InvalidValue as exc:
                ctx.report(here, f"invalid name: {exc}")
                continue
            if normalised in seen:
                ctx.report(here, f"{normalised!r} is defined more than once")
                continue
            seen.add(normalised)
            if not isinstance(table, Mapping):
                ctx.report(here, f"expected a table, got {_describe(table)}")
                continue
            failures_before = ctx.failures
            entry = _parse_section(self.section, table, ctx, here, identity={self.name_field: normalised})
            if ctx.failures == failures_before:
                entries.append(entry)
        return tuple(entries)


class Identifier(Kind):
    """A name made of letters, digits, '-' and '_' (used in logs and metrics labels)."""

    expected = "a name"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise InvalidValue(f"{_short(str(value))} must be 1 to 64 letters, digits, '-' or '_'")
        return value


# --------------------------------------------------------------------------------------------------
# Options and sections
# --------------------------------------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "<required>"


#: Default for options that have none: leaving them out is an error.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """How one key is read: its kind, its default (raw TOML, or a function of the load context for
    defaults that depend on other settings), its documentation and its TOML key if not the field name."""

    kind: Kind
    default: Any
    doc: str
    key: str | None = None
    default_doc: str | None = None


def option(kind: Kind, default: Any, doc: str, *, key: str | None = None, default_doc: str | None = None,
           secret: bool = False) -> Any:
    """Declare a configuration key as a dataclass field (see the module docstring for the pattern).

    ``default`` is written as a user would write it in TOML and goes through the same validation;
    pass a callable taking the load context for defaults derived from other settings (then give
    ``default_doc`` saying how, e.g. ``"DATA_DIR/blobs"``). ``secret`` keeps the value out of ``repr``.
    """
    return field(metadata={"option": Option(kind, default, doc, key, default_doc)}, repr=not secret)


def nested(section: type[Section], doc: str) -> dict[str, Option]:
    """Field metadata for a fixed sub-table (``[storage.lmdb]``): ``field(metadata=nested(Cls, doc))``.

    (A plain ``field`` call rather than :func:`option`, so linters see a dataclass field.)
    """
    return {"option": Option(Subsection(section), {}, doc)}


class Section:
    """Base of all section classes. Subclasses are ``@dataclass(frozen=True, kw_only=True)``."""

    #: Dotted TOML name of the section, for documentation and rendering.
    section: ClassVar[str] = ""

    @classmethod
    def options(cls) -> list[tuple[str, Option]]:
        """``(field name, Option)`` for every configurable key, in declaration order."""
        return [(item.name, item.metadata["option"]) for item in dataclasses.fields(cls)  # type: ignore[arg-type]
                if "option" in item.metadata]

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        """Cross-key rules; report problems with ``ctx.report`` and return the (possibly adjusted) section.

        ``failed`` names the fields whose values were invalid (they hold a stand-in); a rule involving
        one of them is skipped, so a single mistake is reported once.
        """
        return self

    def contribute(self, ctx: LoadContext) -> None:
        """Publish values later sections depend on (``server.data_dir``) into the load context."""


def _parse_section(cls: type[Section], raw: Mapping[str, Any], ctx: LoadContext, path: KeyPath,
                   identity: Mapping[str, Any] | None = None) -> Any:
    """Validate one table against ``cls``: every key in file order, then defaults, then cross-checks."""
    options = cls.options()
    by_key = {(opt.key or name): (name, opt) for name, opt in options}
    values: dict[str, Any] = dict(identity or {})
    failed: set[str] = set()
    for key, value in raw.items():
        here = (*path, key)
        if key not in by_key:
            ctx.report(here, lambda key=key: f"unknown key {_short(key)}" + _suggestion(key, list(by_key)))
            continue
        name, opt = by_key[key]
        failures_before = ctx.failures
        if value is _UNUSABLE:
            ctx.failures += 1
            values[name] = _default(opt, ctx, here, quiet=True)
        else:
            try:
                values[name] = opt.kind.parse(value, ctx, here)
            except InvalidValue as exc:
                ctx.report(here, str(exc))
                values[name] = _default(opt, ctx, here, quiet=True)
        if ctx.failures > failures_before:
            failed.add(name)
    for name, opt in options:
        if name not in values:
            failures_before = ctx.failures
            values[name] = _default(opt, ctx, (*path, opt.key or name))
            if ctx.failures > failures_before:
                failed.add(name)
    section = cls(**values)
    section = section.check(ctx, path, raw, frozenset(failed))
    section.contribute(ctx)
    return section


def _default(opt: Option, ctx: LoadContext, path: KeyPath, quiet: bool = False) -> Any:
    """The parsed default of an option; a required option that is missing is reported here."""
    if opt.default is REQUIRED:
        if not quiet:
            ctx.report(path, "is required")
        return None
    raw = opt.default(ctx) if callable(opt.default) else opt.default
    try:
        return opt.kind.parse(raw, ctx, path)
    except InvalidValue as exc:
        if not quiet:
            ctx.report(path, f"the default value {_describe(raw)} is not usable here ({exc}); set it explicitly")
        return raw


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ListenerTLSConfig(Section):
    """TLS on one listener: implicit TLS from the first byte, or a STARTTLS upgrade."""

    section: ClassVar[str] = "server.listener.ID.tls"

    implicit: bool = option(Bool(), False, "Speak TLS from the first byte (RFC 8314 §3: ports 465, 993, 995; and 443).")
    starttls: bool = option(
        Bool(), True,
        "Offer STARTTLS (RFC 3207, RFC 9051 §6.2.1, RFC 2595, RFC 5804). Defaults to true for every "
        "protocol that has it unless tls.implicit is set; http has no STARTTLS.",
        default_doc="true where the protocol has STARTTLS",
    )


@dataclass(frozen=True, kw_only=True)
class ListenerConfig(Section):
    """One listening socket set: what it binds, which protocol it speaks, how TLS is used."""

    section: ClassVar[str] = "server.listener.ID"

    id: str
    bind: tuple[BindAddress, ...] = option(
        ListOf(Bind(), allow_single=True, allow_empty=False), REQUIRED,
        "Address(es) to listen on: \"host:port\" or a list of them; IPv6 as \"[::1]:143\"; "
        "0.0.0.0 or [::] for all interfaces; port 0 picks a free port.",
    )
    protocol: str = option(Choice(PROTOCOLS), REQUIRED, "One of " + ", ".join(PROTOCOLS) + ".")
    tls: ListenerTLSConfig = field(metadata=nested(ListenerTLSConfig, "TLS settings (tls.implicit, tls.starttls)."))
    allow_plaintext_auth: bool = option(
        Bool(), False,
        "Allow AUTH/LOGIN/USER before TLS is up. Off by default: passwords must not cross the network "
        "in clear (RFC 9051 §6.2.3 LOGINDISABLED, RFC 4954 §4, RFC 2595 §6).",
    )

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if failed & {"protocol", "tls"}:
            return self
        raw_tls = raw.get("tls")
        explicit = isinstance(raw_tls, Mapping) and "starttls" in raw_tls
        has_starttls = self.protocol in STARTTLS_PROTOCOLS
        if not explicit:
            wanted = has_starttls and not self.tls.implicit
            return dataclasses.replace(self, tls=dataclasses.replace(self.tls, starttls=wanted))
        if self.tls.starttls and not has_starttls:
            ctx.report((*path, "tls", "starttls"), f"protocol {self.protocol!r} has no STARTTLS")
        elif self.tls.starttls and self.tls.implicit:
            ctx.report((*path, "tls", "starttls"),
                       "cannot be combined with tls.implicit: the connection is already encrypted")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls.implicit or self.tls.starttls


_DEVELOPMENT_LISTENERS: dict[str, dict[str, Any]] = {
    "smtp": {"bind": "127.0.0.1:2525", "protocol": "smtp"},
    "submission": {"bind": "127.0.0.1:2587", "protocol": "submission"},
    "submissions": {"bind": "127.0.0.1:2465", "protocol": "submission", "tls": {"implicit": True}},
    "imap": {"bind": "127.0.0.1:2143", "protocol": "imap"},
    "imaps": {"bind": "127.0.0.1:2993", "protocol": "imap", "tls": {"implicit": True}},
    "pop3": {"bind": "127.0.0.1:2110", "protocol": "pop3"},
    "pop3s": {"bind": "127.0.0.1:2995", "protocol": "pop3", "tls": {"implicit": True}},
    "managesieve": {"bind": "127.0.0.1:4190", "protocol": "managesieve"},
    "http": {"bind": "127.0.0.1:8080", "protocol": "http"},
}


def _development_listeners(ctx: LoadContext) -> dict[str, dict[str, Any]]:
    return {name: dict(table) for name, table in _DEVELOPMENT_LISTENERS.items()}


@dataclass(frozen=True, kw_only=True)
class ServerConfig(Section):
    """Identity, data location, connection limits and listeners of this server."""

    section: ClassVar[str] = "server"

    hostname: str = option(
        Hostname(), lambda ctx: socket.getfqdn(),
        "Fully qualified name of this server: the SMTP greeting and EHLO name (RFC 5321 §4.1.1.1), "
        "Received: fields, DSN reporting MTA.",
        default_doc="this machine's fully qualified name (socket.getfqdn())",
    )
    data_dir: str = option(Path(), "var", "Where mail, metadata, indexes and generated certificates live.")
    max_connections: int = option(Int(1, 1_000_000), 1000, "Connections accepted at once over all listeners.")
    max_connections_per_ip: int = option(
        Int(1, 1_000_000), 50, "Connections accepted at once from one client IP address.")
    listeners: tuple[ListenerConfig, ...] = option(
        NamedTables(ListenerConfig, "id", Identifier()), _development_listeners,
        "Listening sockets, one [server.listener.ID] table each.",
        key="listener", default_doc="the development listeners on 127.0.0.1 (when no listener is configured)",
    )

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if not failed & {"max_connections", "max_connections_per_ip"} and (
                self.max_connections_per_ip > self.max_connections):
            ctx.report((*path, "max_connections_per_ip"),
                       f"must not exceed max_connections ({self.max_connections})")
        _check_bind_conflicts(self.listeners, ctx, path)
        return self

    def contribute(self, ctx: LoadContext) -> None:
        if isinstance(self.data_dir, str):
            ctx.data_dir = self.data_dir
        if isinstance(self.hostname, str):
            ctx.hostname = self.hostname


def _check_bind_conflicts(listeners: Sequence[ListenerConfig], ctx: LoadContext, path: KeyPath) -> None:
    """Two listeners on one address would fail at bind (EADDRINUSE); say so at validation instead.

    A wildcard address (0.0.0.0 or [::]) conflicts with every address of the same port and family,
    and [::] also covers IPv4 (Linux dual-stack sockets: IPV6_V6ONLY off, the default). Port 0 asks
    the kernel for a fresh port, so it never clashes. Linear in the number of addresses.
    """
    by_port: dict[int, _PortUse] = {}
    for listener in listeners:
        for index, address in enumerate(listener.bind):
            if address.port == 0:
                continue
            use = by_port.setdefault(address.port, _PortUse())
            clash = use.clash(address)
            if clash is not None:
                other, owner = clash
                where = "this listener" if owner == listener.id else f"listener {owner!r}"
                key = (*path, "listener", listener.id, "bind")
                if len(listener.bind) > 1:
                    key = (*key, index)
                if other == address:
                    ctx.report(key, f"address {address} is already used by {where}")
                else:
                    ctx.report(key, f"address {address} overlaps {other} of {where}")
            use.add(address, listener.id)


@dataclass
class _PortUse:
    """Addresses bound on one port so far, indexed for the overlap rules of _check_bind_conflicts."""

    hosts: dict[str, tuple[BindAddress, str]] = field(default_factory=dict)
    first_ipv4: tuple[BindAddress, str] | None = None
    first_ipv6: tuple[BindAddress, str] | None = None
    ipv4_wildcard: tuple[BindAddress, str] | None = None
    ipv6_wildcard: tuple[BindAddress, str] | None = None

    def clash(self, address: BindAddress) -> tuple[BindAddress, str] | None:
        if address.host in self.hosts:
            return self.hosts[address.host]
        if address.is_wildcard:
            if address.is_ipv6:
                return self.first_ipv4 or self.first_ipv6
            return self.first_ipv4 or self.ipv6_wildcard
        if self.ipv6_wildcard is not None:
            return self.ipv6_wildcard
        if not address.is_ipv6:
            return self.ipv4_wildcard
        return None

    def add(self, address: BindAddress, owner: str) -> None:
        entry = (address, owner)
        self.hosts.setdefault(address.host, entry)
        if address.is_ipv6:
            self.first_ipv6 = self.first_ipv6 or entry
            if address.is_wildcard:
                self.ipv6_wildcard = self.ipv6_wildcard or entry
        else:
            self.first_ipv4 = self.first_ipv4 or entry
            if address.is_wildcard:
                self.ipv4_wildcard = self.ipv4_wildcard or entry


@dataclass(frozen=True, kw_only=True)
class SNICertificateConfig(Section):
    """A certificate served when the client asks for one host name (SNI, RFC 6066 §3)."""

    section: ClassVar[str] = "tls.sni.HOSTNAME"

    hostname: str
    certificate: str = option(Path(must_exist=True, pem=True), REQUIRED, "PEM certificate chain, leaf first.")
    private_key: str = option(Path(must_exist=True, pem=True), REQUIRED, "PEM private key of that certificate.")


@dataclass(frozen=True, kw_only=True)
class TLSConfig(Section):
    """Certificates for STARTTLS and implicit TLS."""

    section: ClassVar[str] = "tls"

    certificate: str | None = option(
        Path(optional=True, must_exist=True, pem=True), "",
        "Default PEM certificate chain (leaf first). Set together with private_key.", default_doc="none")
    private_key: str | None = option(
        Path(optional=True, must_exist=True, pem=True), "", "PEM private key for certificate.", default_doc="none")
    self_signed: bool = option(
        Bool(), True,
        "When no certificate is configured, generate a self-signed one into DATA_DIR/tls so that "
        "STARTTLS works out of the box (clients will not trust it; use real certificates in production).",
    )
    min_version: str = option(
        Choice(("TLSv1.2", "TLSv1.3"), aliases={"tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3",
                                                "1.2": "TLSv1.2", "1.3": "TLSv1.3"}),
        "TLSv1.2", "Oldest TLS version accepted; TLS 1.0 and 1.1 are deprecated (RFC 8996).")
    ciphers: str = option(
        Str(), "", "OpenSSL cipher list for TLS 1.2 (\"\" = OpenSSL's defaults; TLS 1.3 suites are fixed).")
    sni: tuple[SNICertificateConfig, ...] = option(
        NamedTables(SNICertificateConfig, "hostname", Hostname(wildcard=True)), {},
        "Per-host-name certificates, one [tls.sni.\"HOSTNAME\"] table each (quote names with dots).",
        default_doc="none")

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if failed & {"certificate", "private_key", "self_signed", "sni"}:
            return self
        if (self.certificate is None) != (self.private_key is None):
            missing = "private_key" if self.private_key is None else "certificate"
            present = "certificate" if missing == "private_key" else "private_key"
            ctx.report((*path, missing), f"is required when {present} is set (set both or neither)")
        elif self.sni and not self.has_default_certificate:
            ctx.report((*path, "sni"), "needs a default certificate for clients without SNI: "
                       "set certificate and private_key, or self_signed = true")
        return self

    @property
    def has_default_certificate(self) -> bool:
        """Whether TLS can be offered at all: a configured certificate or a generated one."""
        return self.certificate is not None or self.self_signed


@dataclass(frozen=True, kw_only=True)
class LMDBConfig(Section):
    """The LMDB metadata store (mailboxes, message metadata, change log, queue)."""

    section: ClassVar[str] = "storage.lmdb"

    path: str = option(Path(), lambda ctx: os.path.join(ctx.data_dir, "metadata"),
                       "Directory of the LMDB environment.", default_doc="DATA_DIR/metadata")
    map_size: int = option(
        Size(1 << 20, 1 << 44), "4GiB",
        "Largest size the database may grow to (address space reserved, not disk used; raise it before it fills).")
    max_readers: int = option(Int(1, 100_000), 126, "Concurrent read transactions (LMDB's reader table size).")


@dataclass(frozen=True, kw_only=True)
class FilesystemBlobConfig(Section):
    """The filesystem blob store: message bodies, content-addressed by SHA-256."""

    section: ClassVar[str] = "storage.filesystem"

    path: str = option(Path(), lambda ctx: os.path.join(ctx.data_dir, "blobs"),
                       "Directory holding the blobs.", default_doc="DATA_DIR/blobs")
    fsync: bool = option(
        Bool(), True,
        "fsync each blob and its directory before acknowledging delivery; a 250 reply is a promise "
        "the message survives a crash (RFC 5321 §6.1). Turn off only for throwaway test servers.")


@dataclass(frozen=True, kw_only=True)
class SearchIndexConfig(Section):
    """The full-text index, fed in batches from the change log.

    (The table is ``[storage.index]`` because ``storage.search`` is already the key choosing the backend.)
    """

    section: ClassVar[str] = "storage.index"

    path: str = option(Path(), lambda ctx: os.path.join(ctx.data_dir, "search"),
                       "Directory of the full-text index.", default_doc="DATA_DIR/search")
    batch_size: int = option(Int(1, 100_000), 500, "Messages indexed per commit.")
    commit_interval: float = option(
        Duration(0.01, 3600), "5s", "Longest time a new message waits before the indexer commits a partial batch.")


@dataclass(frozen=True, kw_only=True)
class StorageConfig(Section):
    """Which store backends hold metadata, message blobs and the search index, and where."""

    section: ClassVar[str] = "storage"

    metadata: str = option(Choice(("lmdb",)), "lmdb", "Metadata store backend.")
    blob: str = option(Choice(("filesystem",)), "filesystem", "Blob store backend.")
    search: str = option(Choice(("tantivy", "whoosh")), "tantivy", "Full-text search backend: tantivy or whoosh.")
    lmdb: LMDBConfig = field(metadata=nested(LMDBConfig, "LMDB settings."))
    filesystem: FilesystemBlobConfig = field(metadata=nested(FilesystemBlobConfig, "Blob directory settings."))
    index: SearchIndexConfig = field(metadata=nested(SearchIndexConfig, "Full-text index settings."))


@dataclass(frozen=True, kw_only=True)
class LoggingConfig(Section):
    """Where log events go and how much of them."""

    section: ClassVar[str] = "logging"

    level: str = option(Choice(("debug", "info", "warn", "error"), aliases={"warning": "warn"}), "info",
                        "Least severe level written: debug, info, warn or error.")
    format: str = option(Choice(("text", "json")), "text",
                         "text for people, json (one object per line) for log collectors.")
    path: str = option(LogPath(), "-", "Log file; \"-\" writes to standard output (journald, containers).")

    @property
    def log_level(self) -> LogLevel:
        """The ``twisted.logger.LogLevel`` matching ``level`` (the names are Twisted's own)."""
        return LogLevel.levelWithName(self.level)


@dataclass(frozen=True, kw_only=True)
class SMTPConfig(Section):
    """Inbound SMTP and submission limits, and outbound delivery (queue and smarthost)."""

    section: ClassVar[str] = "smtp"

    max_message_size: int = option(Size(64 << 10, 2 << 30), "50MiB",
                                   "Largest message accepted, advertised in EHLO SIZE (RFC 1870); RFC 5321 §4.5.3.1.7 requires at least 64K.")
    max_recipients: int = option(
        Int(1, 100_000), 100,
        "Recipients accepted per transaction (RFC 5321 §4.5.3.1.8 asks for at least 100); more get 452.")
    max_line_length: int = option(
        Int(1000, 1 << 20), 4096,
        "Longest line of message data in octets; RFC 5321 §4.5.3.1.6 requires at least 1000.")
    max_command_length: int = option(
        Int(512, 65536), 2048,
        "Longest command line in octets; RFC 5321 §4.5.3.1.4 requires at least 512, extensions need more.")
    command_timeout: float = option(
        Duration(1, 86400), "5m", "Idle time allowed between commands (RFC 5321 §4.5.3.2.7: at least 5 minutes).")
    data_timeout: float = option(
        Duration(1, 86400), "10m", "Idle time allowed while receiving message data (RFC 5321 §4.5.3.2.7).")
    max_errors: int = option(Int(1, 1000), 10, "Failed commands in one session before it is dropped (421).")
    max_received_headers: int = option(
        Int(1, 1000), 50, "Received: fields after which a message is taken to loop and bounced (RFC 5321 §6.3).")
    quota_full_permanent: bool = option(
        Bool(), False,
        "Reject mail for a full mailbox with 552 5.2.2 (permanent) instead of 452 4.2.2 (try later) "
        "(RFC 5321 §4.2.2, RFC 3463 §3.3).")
    relay_host: str = option(
        Hostname(optional=True, allow_ip=True), "",
        "Smarthost for all outbound mail; \"\" delivers directly to each domain's MX.", default_doc="none")
    relay_port: int = option(Int(1, 65535), 587, "Smarthost port.")
    relay_tls: str = option(
        Choice(("starttls", "implicit", "none")), "starttls",
        "TLS to the smarthost: starttls (required, RFC 3207), implicit (RFC 8314) or none.")
    relay_username: str = option(Str(), "", "SMTP AUTH user name for the smarthost; \"\" = no authentication.")
    relay_password: str = option(Str(), "", "SMTP AUTH password for the smarthost (use %{file:...}%).", secret=True)
    queue_lifetime: float = option(
        Duration(60, 90 * 86400), "5d",
        "How long undeliverable mail is retried before it bounces (RFC 5321 §4.5.4.1 suggests 4-5 days).")
    delay_notice_after: float = option(
        Duration(0, 90 * 86400), "4h", "When the sender is told a message is delayed (RFC 3464 'delayed' DSN); 0 = never.")
    retry_initial: float = option(
        Duration(1, 86400), "5m",
        "First retry interval after a temporary failure. RFC 5321 §4.5.4.1 suggests 30 minutes; a short first "
        "retry (as Postfix does) gets greylisted mail through sooner.")
    retry_max: float = option(Duration(1, 86400), "1h", "Longest retry interval; intervals double up to it.")
    rate_per_ip: int = option(Int(0, 1_000_000), 0, "Messages per minute accepted from one client IP; 0 = no limit.")
    rate_per_sender: int = option(
        Int(0, 1_000_000), 0,
        "Messages per minute from one sender: counted per account after AUTH, otherwise per envelope sender "
        "(the null sender per client IP); 0 = no limit.")

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if not failed & {"delay_notice_after", "queue_lifetime"} and (
                self.delay_notice_after and self.delay_notice_after >= self.queue_lifetime):
            ctx.report((*path, "delay_notice_after"),
                       f"must be shorter than queue_lifetime ({_format_duration(self.queue_lifetime)}), or 0")
        if not failed & {"retry_initial", "retry_max"} and self.retry_initial > self.retry_max:
            ctx.report((*path, "retry_initial"), f"must not exceed retry_max ({_format_duration(self.retry_max)})")
        if failed & {"relay_host", "relay_username", "relay_password"}:
            return self
        if bool(self.relay_username) != bool(self.relay_password):
            missing = "relay_password" if self.relay_username else "relay_username"
            ctx.report((*path, missing), "is required when the other relay credential is set")
        if self.relay_username and not self.relay_host:
            ctx.report((*path, "relay_username"), "is set but relay_host is not")
        return self


@dataclass(frozen=True, kw_only=True)
class IMAPConfig(Section):
    """IMAP4rev2/IMAP4rev1 session limits."""

    section: ClassVar[str] = "imap"

    max_literal_size: int = option(Size(1024, 2 << 30), "50MiB",
                                   "Largest literal accepted (APPEND), advertised as APPENDLIMIT (RFC 7889).")
    max_line_length: int = option(
        Int(8192, 16 << 20), 65536,
        "Longest command line outside literals; RFC 7162 §4 asks servers to accept at least 8192 octets.")
    idle_timeout: float = option(
        Duration(1, 86400), "30m",
        "Inactivity before logout; RFC 9051 §5.4 requires at least 30 minutes (IDLE clients renew every 29).")
    max_sessions_per_user: int = option(Int(1, 10_000), 50, "Concurrent authenticated sessions of one user.")
    auth_failure_delay: float = option(Duration(0, 60), "2s", "Delay before answering a failed LOGIN/AUTHENTICATE.")
    max_auth_failures: int = option(Int(1, 100), 3, "Failed authentications before the connection is closed.")


@dataclass(frozen=True, kw_only=True)
class POP3Config(Section):
    """POP3 session limits."""

    section: ClassVar[str] = "pop3"

    idle_timeout: float = option(
        Duration(1, 86400), "10m", "Inactivity before the session ends; RFC 1939 §3 requires at least 10 minutes.")
    auth_failure_delay: float = option(Duration(0, 60), "2s", "Delay before answering a failed USER/PASS or AUTH.")
    max_auth_failures: int = option(Int(1, 100), 3, "Failed authentications before the connection is closed.")


@dataclass(frozen=True, kw_only=True)
class ManageSieveConfig(Section):
    """ManageSieve (RFC 5804) limits and Sieve script quotas."""

    section: ClassVar[str] = "managesieve"

    max_scripts: int = option(Int(1, 10_000), 100, "Scripts one user may store; beyond it PUTSCRIPT fails with QUOTA/MAXSCRIPTS (RFC 5804 §1.3).")
    max_script_size: int = option(Size(1024, 16 << 20), "64KiB",
                                  "Largest script accepted; beyond it PUTSCRIPT fails with QUOTA/MAXSIZE (RFC 5804 §1.3).")
    max_redirects: int = option(
        Int(0, 100), 4, "redirect actions one script may take per message, advertised as MAXREDIRECTS (RFC 5804 §1.7; "
        "RFC 5228 §4.2 lets sites limit them).")
    idle_timeout: float = option(Duration(1, 86400), "30m", "Inactivity before the session ends.")
    max_auth_failures: int = option(Int(1, 100), 3, "Failed authentications before the connection is closed.")


@dataclass(frozen=True, kw_only=True)
class HTTPConfig(Section):
    """JMAP, DAV, the admin API and the web interface."""

    section: ClassVar[str] = "http"

    url: str = option(
        URL(), lambda ctx: f"https://{ctx.hostname}/",
        "Public base URL as clients reach it (through any proxy); used in JMAP session resources and links.",
        default_doc="https://HOSTNAME/")
    session_lifetime: float = option(Duration(60, 365 * 86400), "12h", "How long a web login stays valid.")
    max_request_size: int = option(Size(1024, 2 << 30), "50MiB", "Largest request body (JMAP upload, DAV PUT).")
    trusted_proxies: tuple[Any, ...] = option(
        ListOf(Network()), [],
        "Proxies whose Forwarded / X-Forwarded-For (RFC 7239) is believed for the client address.")


@dataclass(frozen=True, kw_only=True)
class AuthConfig(Section):
    """Password checking and brute-force protection shared by every protocol."""

    section: ClassVar[str] = "auth"

    failure_delay: float = option(Duration(0, 60), "2s", "Delay added to every failed authentication.")
    max_failures_per_ip: int = option(
        Int(1, 1_000_000), 20, "Failed authentications from one IP in 15 minutes before it is refused.")
    argon2_time_cost: int = option(Int(1, 100), 3, "Argon2id passes for new hashes (RFC 9106 §4: t=3).")
    argon2_memory_cost: int = option(Size(64 << 10, 4 << 30), "64MiB",
                                     "Argon2id memory for new hashes (RFC 9106 §4: 64 MiB).")
    argon2_parallelism: int = option(Int(1, 64), 4, "Argon2id lanes for new hashes (RFC 9106 §4: p=4).")

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if not failed & {"argon2_memory_cost", "argon2_parallelism"} and (
                self.argon2_memory_cost < 8 * 1024 * self.argon2_parallelism):
            ctx.report((*path, "argon2_memory_cost"),
                       "must be at least 8KiB per lane of argon2_parallelism (RFC 9106 §3.1)")
        return self


class NameServer(Kind):
    """A recursive name server: an IP literal with an optional port ("10.0.0.53", "127.0.0.1:5353",
    "[::1]:53"); the port defaults to 53 (RFC 1035 §4.2)."""

    expected = "a name server address such as '192.0.2.53' or '127.0.0.1:5353'"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> tuple[str, int]:
        if not isinstance(value, str):
            raise self.type_error(value)
        text = value.strip()
        try:
            return (str(ipaddress.ip_address(text)), 53)
        except ValueError:
            pass
        match = re.fullmatch(r"\[([^\]]+)\]:([0-9]{1,5})|([0-9.]+):([0-9]{1,5})", text)
        if match is None:
            raise InvalidValue(f"invalid name server {_short(value)}; expected an IP address with an "
                               "optional port ('192.0.2.53', '127.0.0.1:5353', '[::1]:53')")
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise InvalidValue(f"invalid name server {_short(value)}: {host!r} is not an IP address") from None
        if address.version == 6 and match.group(1) is None:
            raise InvalidValue(f"invalid name server {_short(value)}: IPv6 addresses need brackets, as '[::1]:53'")
        if not 1 <= port <= 65535:
            raise InvalidValue(f"invalid port {port} in {_short(value)}; expected 1..65535")
        return (str(address), port)


class FreeTable(Kind):
    """A table kept as data and validated by its consumer (the spam filter's rule overrides).

    Stored deeply frozen (mappings read-only, arrays as tuples) so the configuration stays immutable;
    :func:`thaw` gives back plain dicts and lists.
    """

    expected = "a table"

    def __init__(self, *, array_of_tables: bool = False, max_entries: int = 100_000) -> None:
        self.array_of_tables = array_of_tables
        self.max_entries = max_entries
        if array_of_tables:
            self.expected = "an array of tables"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> Any:
        if self.array_of_tables:
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, Mapping) for item in value):
                raise self.type_error(value)
        elif not isinstance(value, Mapping):
            raise self.type_error(value)
        counted = [0]

        def freeze(item: Any) -> Any:
            counted[0] += 1
            if counted[0] > self.max_entries:
                raise InvalidValue(f"has more than {self.max_entries} values")
            if isinstance(item, Mapping):
                return MappingProxyType({str(key): freeze(inner) for key, inner in item.items()})
            if isinstance(item, (list, tuple)):
                return tuple(freeze(inner) for inner in item)
            if isinstance(item, _SubstitutedStr):
                return _coerce_substituted(item)
            if item is _UNUSABLE:
                raise InvalidValue("holds a value whose substitution failed")
            return item

        return freeze(value)


def thaw(value: Any) -> Any:
    """Plain ``dict``/``list`` copies of a value frozen by :class:`FreeTable`."""
    if isinstance(value, Mapping):
        return {key: thaw(inner) for key, inner in value.items()}
    if isinstance(value, tuple):
        return [thaw(inner) for inner in value]
    return value


@dataclass(frozen=True, kw_only=True)
class DNSConfig(Section):
    """The one DNS resolver every part uses (SPF, DKIM, DMARC, DNS lists, outbound MX routing)."""

    section: ClassVar[str] = "dns"

    nameservers: tuple[tuple[str, int], ...] = option(
        ListOf(NameServer(), max_items=16), [],
        "Recursive name servers to ask, as 'address' or 'address:port'; empty uses the nameserver lines "
        "of /etc/resolv.conf. Use a validating resolver you trust: DNS answers decide SPF, DKIM and DMARC.",
        default_doc="the servers in /etc/resolv.conf")
    timeout: float = option(
        Duration(0.1, 60), "5s",
        "How long one lookup (with its retry) may take before it counts as a temporary failure "
        "(SPF/DKIM/DMARC temperror, RFC 7208 §2.6.6; outbound delivery retries later).")
    cache_entries: int = option(
        Int(0, 10_000_000), 10_000, "Answers kept in the cache (each for its TTL); 0 disables caching.")


@dataclass(frozen=True, kw_only=True)
class MailAuthConfig(Section):
    """Mail authentication: SPF, DKIM, DMARC and ARC checks of inbound mail, signing of outbound mail."""

    section: ClassVar[str] = "mailauth"

    enabled: bool = option(
        Bool(), True,
        "Check SPF, DKIM, DMARC and ARC of mail arriving on smtp listeners and add Authentication-Results "
        "(RFC 8601). Authenticated submissions are never checked.")
    authserv_id: str = option(
        Hostname(optional=True), "",
        "The authserv-id of our Authentication-Results fields (RFC 8601 §2.5); incoming fields claiming "
        "it are removed.", default_doc="server.hostname")
    dmarc_reject: str = option(
        Choice(("reject", "quarantine", "none")), "reject",
        "What to do with mail failing DMARC when the domain asks for p=reject (RFC 7489 §6.7 lets the "
        "receiver decide): reject it at the end of DATA with 550 5.7.1, file it into Junk, or only record it.")
    dmarc_quarantine: str = option(
        Choice(("quarantine", "none")), "quarantine",
        "What to do with mail failing DMARC when the domain asks for p=quarantine: file it into Junk, "
        "or only record it.")
    spf_fail: str = option(
        Choice(("none", "quarantine", "reject")), "none",
        "What to do with mail whose MAIL FROM gets SPF fail (RFC 7208 §8.4): only record and score it (as "
        "Stalwart and Dovecot setups do, leaving the decision to DMARC), file it into Junk, or reject it "
        "with 550 5.7.23 (RFC 7372 §3.2).")
    junk_mailbox: str = option(Str(allow_empty=False, max_length=255), "Junk",
                               "Mailbox that quarantined mail is filed into.")
    sign_outbound: bool = option(
        Bool(), True,
        "DKIM-sign mail from submission listeners with every key the sender's domain has "
        "(`mailserve dkim generate DOMAIN`; RFC 6376, RFC 8463).")
    seal_forwarded: bool = option(
        Bool(), True, "ARC-seal mail forwarded to remote addresses (RFC 8617 §5.1).")
    arc_domain: str = option(
        Hostname(optional=True), "",
        "Domain whose RSA DKIM key seals forwarded mail (RFC 8617 only defines rsa-sha256); empty uses the "
        "server host name or the nearest parent domain of it that has a key.", default_doc="automatic")


def _shipped_dnsbls(ctx: LoadContext) -> list[Any]:
    from mailserve.spam.settings import default_rules_text

    return tomllib.loads(default_rules_text()).get("dnsbl", [])


#: Tables of the spam filter's rules file that ``[spam]`` may override.
SPAM_RULE_TABLES = ("thresholds", "limits", "bayes", "greylist", "reputation", "allowlist", "blocklist",
                    "urls", "scores")


@dataclass(frozen=True, kw_only=True)
class SpamConfig(Section):
    """The built-in spam filter: on or off, and overrides of its shipped rules file (mailserve/spam/rules.toml).

    Every table of the rules file may be given here with only the keys to change (``[spam.scores]``,
    ``[spam.thresholds]``...); ``[[spam.dnsbl]]`` replaces the DNS list definitions as a whole.
    """

    section: ClassVar[str] = "spam"

    enabled: bool = option(
        Bool(), True, "Score inbound mail, add X-Spam-Status/X-Spam-Result, file spam into Junk, reject "
        "or discard over the thresholds, and learn from Junk moves.")
    thresholds: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [thresholds] in the rules file: spam, discard, reject.")
    limits: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [limits]: bytes, parts, tokens and URLs analysed.")
    bayes: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [bayes]: the classifier and its autolearning.")
    greylist: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [greylist]: triplet greylisting.")
    reputation: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [reputation]: sender reputation.")
    allowlist: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [allowlist]: networks and domains.")
    blocklist: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [blocklist]: networks and domains.")
    urls: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [urls]: shorteners, suspicious TLDs, freemail domains.")
    scores: Mapping[str, Any] = option(FreeTable(), {}, "Overrides of [scores]: the weight of each rule.")
    dnsbl: tuple[Mapping[str, Any], ...] = option(
        FreeTable(array_of_tables=True, max_entries=10_000), _shipped_dnsbls,
        "DNS block- and allowlists (RFC 5782), replacing the shipped ones as a whole; [] disables them.",
        default_doc="the lists of the rules file")

    @property
    def rules(self) -> dict[str, Any]:
        """The overrides as :func:`mailserve.spam.settings.load_settings` takes them."""
        overrides = {name: thaw(getattr(self, name)) for name in SPAM_RULE_TABLES if getattr(self, name)}
        overrides["dnsbl"] = thaw(self.dnsbl)
        return overrides

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if failed:
            return self
        from mailserve.spam.settings import SpamSettingsError, load_settings

        try:
            load_settings(self.rules)
        except SpamSettingsError as exc:
            for issue in exc.issues:
                where, _, message = issue.partition(": ")
                ctx.report(_dotted_path(where, path), message or issue)
        return self


def _dotted_path(text: str, base: KeyPath) -> KeyPath:
    """``spam.dnsbl[0].zone`` as a key path; the spam filter reports its problems this way."""
    parts: list[str | int] = []
    for piece in text.split("."):
        name, *indexes = re.split(r"\[(\d+)\]", piece)
        if name:
            parts.append(name)
        parts.extend(int(index) for index in indexes if index)
    if parts and parts[0] == "spam":
        parts = parts[1:]
    return (*base, *parts)


@dataclass(frozen=True, kw_only=True)
class Config(Section):
    """The whole configuration of one server. Build it with :func:`load_config`, :func:`parse_config`,
    :meth:`Config.from_dict` or :func:`default_config`; it never changes afterwards."""

    section: ClassVar[str] = ""

    source: str = field(compare=False)
    server: ServerConfig = field(metadata=nested(ServerConfig, ""))
    tls: TLSConfig = field(metadata=nested(TLSConfig, ""))
    storage: StorageConfig = field(metadata=nested(StorageConfig, ""))
    logging: LoggingConfig = field(metadata=nested(LoggingConfig, ""))
    smtp: SMTPConfig = field(metadata=nested(SMTPConfig, ""))
    imap: IMAPConfig = field(metadata=nested(IMAPConfig, ""))
    pop3: POP3Config = field(metadata=nested(POP3Config, ""))
    managesieve: ManageSieveConfig = field(metadata=nested(ManageSieveConfig, ""))
    http: HTTPConfig = field(metadata=nested(HTTPConfig, ""))
    auth: AuthConfig = field(metadata=nested(AuthConfig, ""))
    dns: DNSConfig = field(metadata=nested(DNSConfig, ""))
    mailauth: MailAuthConfig = field(metadata=nested(MailAuthConfig, ""))
    spam: SpamConfig = field(metadata=nested(SpamConfig, ""))

    @property
    def listeners(self) -> tuple[ListenerConfig, ...]:
        return self.server.listeners

    @property
    def self_signed_dir(self) -> str:
        """Where a generated self-signed certificate and key are kept (see ``tls.self_signed``)."""
        return os.path.join(self.server.data_dir, "tls")

    def check(self, ctx: LoadContext, path: KeyPath, raw: Mapping[str, Any], failed: frozenset[str]) -> Self:
        if not failed & {"tls", "server"} and not self.tls.has_default_certificate:
            for listener in self.listeners:
                for name, enabled in (("implicit", listener.tls.implicit), ("starttls", listener.tls.starttls)):
                    if enabled:
                        ctx.report(("server", "listener", listener.id, "tls", name),
                                   "needs a certificate: set tls.certificate and tls.private_key, or "
                                   "tls.self_signed = true" + (" (or tls.starttls = false)" if name == "starttls" else ""))
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>", env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from already-parsed TOML data (substitution and validation included).

        Raises :class:`ConfigError` listing every problem.
        """
        ctx = LoadContext(source=source, env=os.environ if env is None else env, cwd=os.getcwd())
        config = _build(data, ctx)
        if ctx.issues:
            raise ctx.error()
        return config


def _build(data: Mapping[str, Any], ctx: LoadContext) -> Config:
    if not isinstance(data, Mapping):
        ctx.report((), f"expected a table at the top level, got {_describe(data)}")
        data = {}
    substituted = _substitute(data, ctx, ())
    return _parse_section(Config, substituted, ctx, (), identity={"source": ctx.source})


# --------------------------------------------------------------------------------------------------
# Substitution
# --------------------------------------------------------------------------------------------------

_SUBSTITUTION = re.compile(r"%\{(.*?)\}%", re.DOTALL)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(value: Any, ctx: LoadContext, path: KeyPath) -> Any:
    """Expand ``%{env:...}%`` and ``%{file:...}%`` in every string of a TOML tree."""
    if isinstance(value, Mapping):
        return {key: _substitute(item, ctx, (*path, key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_substitute(item, ctx, (*path, index)) for index, item in enumerate(value)]
    if not isinstance(value, str) or "%{" not in value:
        return value
    failed = False

    def expand(match: re.Match[str]) -> str:
        nonlocal failed
        try:
            return _expand_one(match.group(1), ctx)
        except InvalidValue as exc:
            ctx.report(path, str(exc))
            failed = True
            return ""

    result = _SUBSTITUTION.sub(expand, value)
    return _UNUSABLE if failed else _SubstitutedStr(result)


def _expand_one(expression: str, ctx: LoadContext) -> str:
    scheme, colon, argument = expression.partition(":")
    if scheme == "env" and colon:
        name, has_default, default = argument.partition(":")
        if not _ENV_NAME.fullmatch(name):
            raise InvalidValue(f"invalid environment variable name {name!r} in %{{{expression}}}%")
        if name in ctx.env:
            return ctx.env[name]
        if has_default:
            return default
        raise InvalidValue(f"environment variable {name!r} is not set (write %{{env:{name}:default}}% for a default)")
    if scheme == "file" and colon:
        if not argument:
            raise InvalidValue("%{file:}% needs a path")
        path = ctx.resolve_path(argument)
        try:
            with open(path, "rb") as handle:
                content = handle.read(MAX_SUBSTITUTED_FILE_SIZE + 1)
        except OSError as exc:
            raise InvalidValue(f"cannot read {path!r}: {exc.strerror or exc}") from None
        if len(content) > MAX_SUBSTITUTED_FILE_SIZE:
            raise InvalidValue(f"file {path!r} is larger than {_format_size(MAX_SUBSTITUTED_FILE_SIZE)}")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue(f"file {path!r} is not UTF-8 text") from None
        return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    raise InvalidValue(f"unknown substitution %{{{_short(expression, 40)[1:-1]}}}%; "
                       "expected %{env:NAME}%, %{env:NAME:default}% or %{file:PATH}%")


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def parse_config(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    """Parse TOML text into a Config; ``source`` names it in error messages."""
    ctx = LoadContext(source=source, env=os.environ if env is None else env, cwd=os.getcwd())
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(source, "", f"not valid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(source, "", "not valid TOML: nested too deeply")]) from None
    except ValueError as exc:  # an integer literal beyond Python's int() digit limit
        raise ConfigError([ConfigIssue(source, "", f"not valid TOML: {exc}")]) from None
    config = _build(data, ctx)
    if ctx.issues:
        raise ctx.error()
    return config


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file at ``path`` (blocking; call before the reactor runs).

    Raises :class:`ConfigError` with one :class:`ConfigIssue` per problem, each naming ``path``.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot read configuration: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_CONFIG_FILE_SIZE:
        raise ConfigError([ConfigIssue(path, "", f"larger than {_format_size(MAX_CONFIG_FILE_SIZE)}; "
                                       "not a configuration file?")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(path, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_config(text, source=path, env=env)


def default_config(data_dir: str) -> Config:
    """The configuration used when there is no file at all: every default, data under ``data_dir``."""
    return Config.from_dict({"server": {"data_dir": data_dir}}, source="<defaults>", env={})


# --------------------------------------------------------------------------------------------------
# Rendering the documented default file (`mailserve init`)
# --------------------------------------------------------------------------------------------------


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{format_key_path((k,))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")


def _comment(text: str, width: int = 98) -> list[str]:
    lines: list[str] = []
    current = "#"
    for word in text.split():
        if len(current) + 1 + len(word) > width and current != "#":
            lines.append(current)
            current = "#"
        current += " " + word
    if current != "#":
        lines.append(current)
    return lines


def _doc_title(cls: type[Section]) -> str:
    return (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


def _render_options(cls: type[Section], ctx: LoadContext, lines: list[str], prefix: str = "",
                    explicit: Mapping[str, Any] | None = None) -> None:
    """Every scalar option of ``cls`` as doc comments plus ``# key = default`` (or a live line if explicit)."""
    explicit = explicit or {}
    for name, opt in cls.options():
        if isinstance(opt.kind, (Subsection, NamedTables)):
            continue
        key = prefix + (opt.key or name)
        lines.extend(_comment(opt.doc))
        if key in explicit:
            lines.append(f"{key} = {_toml_value(explicit[key])}")
        elif opt.default is REQUIRED:
            lines.append(f"# {key} = ...  (required)")
        else:
            raw = opt.default(ctx) if callable(opt.default) else opt.default
            if opt.default_doc and not callable(opt.default):
                lines.append(f"# Default: {opt.default_doc}.")
            lines.append(f"# {key} = {_toml_value(raw)}")
        lines.append("")


def _render_section(cls: type[Section], path: str, ctx: LoadContext, lines: list[str],
                    explicit: Mapping[str, Any] | None = None) -> None:
    lines.append(f"[{path}]")
    lines.extend(_comment(_doc_title(cls)))
    lines.append("")
    _render_options(cls, ctx, lines, explicit=explicit)
    for name, opt in cls.options():
        if isinstance(opt.kind, Subsection):
            _render_section(opt.kind.section, f"{path}.{opt.key or name}", ctx, lines)


def _render_listeners(ctx: LoadContext, lines: list[str]) -> None:
    lines.append("# Listeners: one [server.listener.ID] table per socket set; ID is any name (used in logs).")
    lines.append("# Keys of a listener table:")
    documented: list[str] = []
    _render_options(ListenerConfig, ctx, documented)
    _render_options(ListenerTLSConfig, ctx, documented, prefix="tls.")
    lines.extend(line if line.startswith("#") else ("#" + (" " + line if line else "")) for line in documented)
    lines.append("")
    for name, table in _DEVELOPMENT_LISTENERS.items():
        lines.append(f"[server.listener.{name}]")
        for key, value in table.items():
            if isinstance(value, Mapping):
                for sub_key, sub_value in value.items():
                    lines.append(f"{key}.{sub_key} = {_toml_value(sub_value)}")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")


def render_default_config(data_dir: str, hostname: str) -> str:
    """A complete, commented configuration file with every key and its default, as ``mailserve init``
    writes it. Only ``hostname``, ``data_dir`` and the listeners are set (uncommented lines); every other key is
    shown commented out at its default, so the file parses back to the defaults."""
    ctx = LoadContext(source="<render>", env={}, cwd=os.getcwd(), data_dir=data_dir, hostname=hostname)
    lines = [
        "# mailserve configuration (TOML).",
        "#",
        "# Every key is listed with its default; uncomment a line to change it. String values may use",
        "# %{env:NAME}%, %{env:NAME:default}% and %{file:PATH}% (the file's contents, for secrets).",
        "# Sizes: bytes or '512KiB', '25MiB', '1GB'. Durations: seconds or '30s', '5m', '2h', '5d'.",
        "# Relative paths are taken from the directory mailserve is started in.",
        "# Check this file with: mailserve validate",
        "",
    ]
    for name, opt in Config.options():
        section_cls = opt.kind.section  # type: ignore[attr-defined]
        if section_cls is ServerConfig:
            _render_section(ServerConfig, "server", ctx, lines,
                            explicit={"hostname": hostname, "data_dir": data_dir})
            _render_listeners(ctx, lines)
        elif section_cls is TLSConfig:
            _render_section(TLSConfig, "tls", ctx, lines)
            lines.extend([
                "# Certificates chosen by the name the client asks for (SNI); quote names containing dots:",
                '# [tls.sni."mail.example.org"]',
                '# certificate = "/etc/mailserve/tls/mail.example.org.pem"',
                '# private_key = "/etc/mailserve/tls/mail.example.org.key"',
                "",
            ])
        else:
            _render_section(section_cls, name, ctx, lines)
    return "\n".join(lines).rstrip("\n") + "\n"
