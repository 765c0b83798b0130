"""The documented default configuration file that ``mailserve init`` writes.

Rendered from the section classes themselves, so every key appears with its documentation and
default and the file parses back to the defaults with no second list to keep in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mailserve.config.context import LoadContext
from mailserve.config.errors import _toml_string, format_key_path
from mailserve.config.root import Config
from mailserve.config.schema import REQUIRED, NamedTables, Section, Subsection
from mailserve.config.sections import _DEVELOPMENT_LISTENERS, ListenerConfig, ListenerTLSConfig, ServerConfig, TLSConfig

# --------------------------------------------------------------------------------------------------
# Rendering the documented default file (`mailserve init`)
# --------------------------------------------------------------------------------------------------


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
