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

Where things are
----------------
- :mod:`~mailserve.config.substitution` -- pass 1, ``%{env:...}%`` and ``%{file:...}%``.
- :mod:`~mailserve.config.kinds` -- the kinds: one class per type of value (sizes, durations, paths, binds...).
- :mod:`~mailserve.config.schema` -- :func:`option`, :func:`nested`, :class:`Section` and the validation of one table.
- :mod:`~mailserve.config.sections` -- every section class; :mod:`~mailserve.config.root` -- :class:`Config`.
- :mod:`~mailserve.config.errors` and :mod:`~mailserve.config.context` -- issues, errors, the state of one load.
- :mod:`~mailserve.config.loading` -- the entry points; :mod:`~mailserve.config.render` -- ``mailserve init``'s file.

Import from :mod:`mailserve.config` itself; the modules are its inside.
"""

from mailserve.config.context import MAX_REPORTED_ISSUES, LoadContext
from mailserve.config.errors import ConfigError, ConfigIssue, InvalidValue
from mailserve.config.kinds import BindAddress, Duration, Int, Kind, Size
from mailserve.config.loading import MAX_CONFIG_FILE_SIZE, default_config, load_config, parse_config
from mailserve.config.render import render_default_config
from mailserve.config.root import Config
from mailserve.config.schema import REQUIRED, Section, nested, option
from mailserve.config.sections import (
    PROTOCOLS,
    STARTTLS_PROTOCOLS,
    AuthConfig,
    DNSConfig,
    FilesystemBlobConfig,
    HTTPConfig,
    IMAPConfig,
    ListenerConfig,
    ListenerTLSConfig,
    LMDBConfig,
    LoggingConfig,
    MailAuthConfig,
    ManageSieveConfig,
    POP3Config,
    SearchIndexConfig,
    ServerConfig,
    SMTPConfig,
    SNICertificateConfig,
    SpamConfig,
    StorageConfig,
    TLSConfig,
)

__all__ = [
    "MAX_CONFIG_FILE_SIZE",
    "MAX_REPORTED_ISSUES",
    "PROTOCOLS",
    "REQUIRED",
    "STARTTLS_PROTOCOLS",
    "AuthConfig",
    "BindAddress",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DNSConfig",
    "Duration",
    "FilesystemBlobConfig",
    "HTTPConfig",
    "IMAPConfig",
    "Int",
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
    "Size",
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
