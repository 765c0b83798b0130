"""Kinds: the type of each configuration value and how a raw TOML value becomes the typed one.

One class per type of value (sizes, durations, paths, bind addresses, host names...), each with a
``parse`` that either returns the typed value or raises :class:`InvalidValue` with a message
saying what was expected; a section declares its keys with these.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from mailserve.config.context import LoadContext
from mailserve.config.errors import (
    InvalidValue,
    KeyPath,
    _describe,
    _format_duration,
    _format_size,
    _short,
    _suggestion,
)
from mailserve.config.substitution import _UNUSABLE, _SubstitutedStr

#: Largest PEM file accepted for certificates and keys (a long chain is still only tens of KiB).
MAX_PEM_FILE_SIZE = 1024 * 1024


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


class Identifier(Kind):
    """A name made of letters, digits, '-' and '_' (used in logs and metrics labels)."""

    expected = "a name"

    def parse(self, value: object, ctx: LoadContext, path: KeyPath) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise InvalidValue(f"{_short(str(value))} must be 1 to 64 letters, digits, '-' or '_'")
        return value


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
