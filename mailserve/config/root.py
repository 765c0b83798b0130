"""The whole configuration: the root :class:`Config` and the passes that build it from a TOML tree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from mailserve.config.context import LoadContext
from mailserve.config.errors import KeyPath, _describe
from mailserve.config.schema import Section, _parse_section, nested
from mailserve.config.sections import (
    AuthConfig,
    DNSConfig,
    HTTPConfig,
    IMAPConfig,
    ListenerConfig,
    LoggingConfig,
    MailAuthConfig,
    ManageSieveConfig,
    POP3Config,
    ServerConfig,
    SMTPConfig,
    SpamConfig,
    StorageConfig,
    TLSConfig,
)
from mailserve.config.substitution import _substitute


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
