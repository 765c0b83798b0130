"""Options and sections: how a section class declares its keys and how one table is validated.

A section is a frozen dataclass whose fields are declared with :func:`option`; :func:`_parse_section`
reads a table against it (every key in file order, then defaults, then cross-checks), reporting
unknown keys with a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from mailserve.config.context import LoadContext
from mailserve.config.errors import InvalidValue, KeyPath, _describe, _short, _suggestion
from mailserve.config.kinds import Kind
from mailserve.config.substitution import _UNUSABLE

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
# Kinds whose value is a table read against a section class
# --------------------------------------------------------------------------------------------------


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
