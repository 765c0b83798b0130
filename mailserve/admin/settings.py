"""Reading the running configuration, and changing the settings that take effect without a restart.

Most settings are read once when a listener or store is built (bind addresses, store paths, TLS
certificates), so changing them at run time would lie about what the server does.  The settings
in :data:`LIVE_SETTINGS` are read from ``server.config`` when they apply (when a session starts,
at every message or login, as each entry says), so replacing the config object is enough.  A
session keeps the limits it started with where it has announced them to the client (SMTP's EHLO
SIZE, RFC 1870 §4), as a Postfix ``reload`` leaves running smtpd processes alone.  Changes are
made in memory only and are validated by the same kind (type and range) as the configuration
file, so an API write can never produce a value the file would refuse; edit the file to keep
them across restarts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from mailserve.admin.errors import InvalidRequest
from mailserve.config import (
    BindAddress,
    Config,
    InvalidValue,
    LoadContext,
    Section,
)

#: Dotted key -> what reads it at use time (so that a change applies to the next use).
LIVE_SETTINGS: dict[str, str] = {
    "smtp.max_message_size": "applies to new SMTP sessions (advertised as EHLO SIZE, RFC 1870)",
    "smtp.max_recipients": "applies to new SMTP sessions",
    "smtp.max_errors": "applies to new SMTP sessions",
    "smtp.rate_per_ip": "checked per message (at MAIL FROM)",
    "smtp.rate_per_sender": "checked per message (at MAIL FROM)",
    "imap.idle_timeout": "applies to new IMAP sessions and to each new IDLE command",
    "imap.auth_failure_delay": "applies to the next failed IMAP login",
    "pop3.idle_timeout": "applies to new POP3 sessions",
    "pop3.auth_failure_delay": "applies to the next failed POP3 login",
    "managesieve.max_scripts": "checked per PUTSCRIPT and HAVESPACE (and script uploads through the API)",
    "managesieve.max_script_size": "checked per PUTSCRIPT and HAVESPACE (and script uploads through the API)",
    "auth.failure_delay": "applies to the next failed SMTP AUTH, ManageSieve or web login",
    "http.session_lifetime": "applies to new web admin logins",
}


def _field_meta(section: Section, name: str):
    for item in dataclasses.fields(section):  # type: ignore[arg-type]
        if item.name == name:
            return item
    return None


def _json_value(value: Any) -> Any:
    if isinstance(value, BindAddress):
        host = f"[{value.host}]" if ":" in value.host else value.host
        return f"{host}:{value.port}"
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network | ipaddress.IPv4Address
                  | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, Section):
        return config_view(value)
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def config_view(section: Section) -> dict[str, Any]:
    """The section as JSON-ready data; secret values (``repr=False`` fields) read ``"********"``."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(section):  # type: ignore[arg-type]
        if item.name == "source":
            continue
        value = getattr(section, item.name)
        if not item.repr:
            out[item.name] = "********" if value else ""
            continue
        if item.name == "listeners":
            out["listener"] = {listener.id: {k: v for k, v in config_view(listener).items() if k != "id"}
                               for listener in value}
            continue
        out[item.name] = _json_value(value)
    return out


def live_settings_view(config: Config) -> dict[str, Any]:
    """``{dotted key: current value}`` of every live-reloadable setting."""
    out = {}
    for key in LIVE_SETTINGS:
        section_name, _, name = key.partition(".")
        out[key] = _json_value(getattr(getattr(config, section_name), name))
    return out


def apply_live_settings(config: Config, changes: Mapping[str, Any]) -> Config:
    """A new Config with ``changes`` applied; every change is validated before any is applied.

    Raises :class:`InvalidRequest` naming the first unusable key (so nothing is half-applied).
    """
    if not changes:
        raise InvalidRequest("no settings given")
    parsed: dict[str, dict[str, Any]] = {}
    ctx = LoadContext(source="<api>", env={}, cwd=os.getcwd(), data_dir=config.server.data_dir,
                      hostname=config.server.hostname)
    for key, raw in changes.items():
        if key not in LIVE_SETTINGS:
            raise InvalidRequest(
                f"{key!r} is not a live-reloadable setting; live settings: {', '.join(sorted(LIVE_SETTINGS))}",
                field=key)
        section_name, _, name = key.partition(".")
        section = getattr(config, section_name)
        item = _field_meta(section, name)
        option = item.metadata["option"]
        if isinstance(raw, bool) and option.kind.expected != "a boolean (true or false)":
            raise InvalidRequest(f"{key}: expected {option.kind.expected}, got a boolean", field=key)
        try:
            value = option.kind.parse(raw, ctx, tuple(key.split(".")))
        except InvalidValue as exc:
            raise InvalidRequest(f"{key}: {exc}", field=key) from None
        parsed.setdefault(section_name, {})[name] = value
    replaced = {name: dataclasses.replace(getattr(config, name), **values) for name, values in parsed.items()}
    return dataclasses.replace(config, **replaced)
