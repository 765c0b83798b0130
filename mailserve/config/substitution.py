"""The first pass of loading: ``%{env:NAME}%``, ``%{env:NAME:default}%`` and ``%{file:PATH}%``.

Substitution runs over every string of the TOML tree before any validation, so a value that came
from the environment is validated like any other; substituted text is not scanned again, so a
value cannot smuggle in another substitution.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mailserve.config.context import LoadContext
from mailserve.config.errors import InvalidValue, KeyPath, _format_size, _short

#: Largest file ``%{file:PATH}%`` will read; it is meant for secrets and single values.
MAX_SUBSTITUTED_FILE_SIZE = 1024 * 1024


class _SubstitutedStr(str):
    """A string produced by ``%{...}%`` substitution; numeric kinds may read it as a number."""


class _Unusable:
    """Marks a value whose substitution failed (already reported), so validation skips it."""

    def __repr__(self) -> str:
        return "<unusable>"


_UNUSABLE = _Unusable()


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
