"""Every section of the configuration file, one frozen dataclass per TOML table.

Adding a key is one :func:`option` line in its section; cross-key rules live in that section's
``check``. The root :class:`Config` gathering them is in :mod:`mailserve.config.root`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from twisted.logger import LogLevel

from mailserve.config.context import LoadContext
from mailserve.config.errors import KeyPath, _format_duration
from mailserve.config.kinds import (
    URL,
    Bind,
    BindAddress,
    Bool,
    Choice,
    Duration,
    FreeTable,
    Hostname,
    Identifier,
    Int,
    ListOf,
    LogPath,
    NameServer,
    Network,
    Path,
    Size,
    Str,
    thaw,
)
from mailserve.config.schema import REQUIRED, NamedTables, Section, nested, option

#: Every protocol a listener can speak.
PROTOCOLS = ("smtp", "submission", "imap", "pop3", "managesieve", "http")
#: Protocols with an in-band TLS upgrade: SMTP/submission (RFC 3207), IMAP (RFC 9051 §6.2.1),
#: POP3 (RFC 2595 §4), ManageSieve (RFC 5804 §2.2). HTTP has none (RFC 2817 upgrade is not used).
STARTTLS_PROTOCOLS = frozenset({"smtp", "submission", "imap", "pop3", "managesieve"})


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
