"""Entry points: a configuration file or TOML text in, a validated :class:`Config` out.

Loading is blocking (it reads files and may call ``socket.getfqdn()``): do it before the reactor
runs, or in ``deferToThread``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping

from mailserve.config.context import LoadContext
from mailserve.config.errors import ConfigError, ConfigIssue, _format_size
from mailserve.config.root import Config, _build

#: (a log, a disk image) cannot exhaust memory.
MAX_CONFIG_FILE_SIZE = 4 * 1024 * 1024


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
