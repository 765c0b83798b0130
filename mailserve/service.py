"""The one place that assembles a mail server out of its parts.

``makeService(config)`` returns a ``MailServer``: a ``MultiService`` that owns the stores,
the core, the directory, the indexer and one ``ListenerService`` per configured listener.
Nothing else in mailserve constructs a store; protocol factories are given the server and
pull what they need from it (Synapse's ``HomeServer`` pattern).  It holds no global state,
so a program can run several servers in one process, and embeds under any service tree.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import json
import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from mailserve.config import Config, ListenerConfig
from mailserve.directory.credentials import AuthenticationSource, authentication_source
from mailserve.interfaces import IServiceContainer

#: Where each listener protocol's factory builder lives: ``build(server, listener)``.
PROTOCOLS: dict[str, str] = {
    "smtp": "mailserve.smtp.factory:build_mx",
    "submission": "mailserve.smtp.factory:build_submission",
    "imap": "mailserve.imap.factory:build",
    "pop3": "mailserve.pop3.factory:build",
    "managesieve": "mailserve.sieve.managesieve:build",
    "http": "mailserve.web.factory:build",
}


class StartupError(Exception):
    """The server cannot start; ``str()`` says why in words an admin can act on."""


def protocol_builder(protocol: str):
    """The factory builder of a protocol, or ``None`` where this build has none."""
    target = PROTOCOLS.get(protocol)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            return None
        raise
    return getattr(module, attr, None)


class DataDirectoryLock:
    """An exclusive lock on the data directory: one server per data directory.

    ``flock`` is released by the kernel when the process dies, so a crash never leaves a
    stale lock behind (unlike a bare pid file).
    """

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, "mailserve.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(
                    f"another mailserve (pid {holder}) is already running on data directory "
                    f"{os.path.dirname(self.path)}; stop it first or use another server.data_dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


#: What each protocol says to a connection it cannot take, in its own words, before hanging up.
#: ``{host}`` is the server's name, ``{reason}`` why (the limit that was reached).
REFUSALS: dict[str, str] = {
    # RFC 5321 §3.8: a server that cannot serve answers the connection with 421 and closes.
    "smtp": "421 4.7.0 {host} {reason}, try again later\r\n",
    "submission": "421 4.7.0 {host} {reason}, try again later\r\n",
    # RFC 9051 §7.1.5: a BYE greeting; [UNAVAILABLE] is RFC 5530 §3's code for "try later".
    "imap": "* BYE [UNAVAILABLE] {reason}; try again later\r\n",
    # RFC 2449 §8 and RFC 3206 §4: -ERR with [SYS/TEMP], a temporary refusal (as Dovecot says it).
    "pop3": "-ERR [SYS/TEMP] {reason}; try again later\r\n",
    # RFC 5804 §1.3: BYE with the TRYLATER response code.
    "managesieve": 'BYE (TRYLATER) "{reason}; try again later"\r\n',
}


class ConnectionGate:
    """Connections open at once over all listeners of one server, in total and per client address.

    Enforces ``server.max_connections`` and ``server.max_connections_per_ip`` (read at every
    connection, so a changed configuration applies at once) in one place for every protocol,
    as Postfix's anvil and Dovecot's ``process_limit``/``mail_max_userip_connections`` do: a
    flood on one port cannot take the slots of the others.  The per-address table holds only
    addresses with open connections, so it is bounded by ``max_connections``.
    """

    def __init__(self, limits: Callable[[], Any]) -> None:
        self._limits = limits
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; returns why it is refused (counting nothing), or ``None``."""
        limits = self._limits()
        if self.total >= limits.max_connections:
            return "Too many connections"
        if self.per_ip.get(ip, 0) >= limits.max_connections_per_ip:
            return "Too many connections from your address"
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left <= 0:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = left


class _Refusal(Protocol):
    """Says the protocol's "too many connections" line and hangs up.

    Refused connections are not counted, so they must not linger: on an implicit-TLS listener
    the line waits for a handshake the client may never finish, hence the hard deadline.
    """

    #: Seconds a refused client has to take its answer before the connection is aborted.
    DEADLINE = 10.0

    def __init__(self, line: bytes, reactor: Any) -> None:
        self.line = line
        self.reactor = reactor
        self._deadline: Any = None

    def connectionMade(self) -> None:
        self._deadline = self.reactor.callLater(self.DEADLINE, self.transport.abortConnection)
        self.transport.write(self.line)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class CountedConnection(ProtocolWrapper):
    """One admitted connection: released from the gate and the active gauge when it closes.

    While its protocol handles an event, the listener's :class:`AuthenticationSource` is the
    current one, so a failed authentication anywhere below is counted under this protocol
    (``mailserve.directory.credentials``).
    """

    ip = ""
    _counted = False

    def makeConnection(self, transport: Any) -> None:
        token = authentication_source.set(self.factory.source)
        try:
            super().makeConnection(transport)
        finally:
            authentication_source.reset(token)

    def dataReceived(self, data: bytes) -> None:
        token = authentication_source.set(self.factory.source)
        try:
            super().dataReceived(data)
        finally:
            authentication_source.reset(token)

    def connectionLost(self, reason: Any) -> None:
        if self._counted:
            self._counted = False
            self.factory.closed(self)
        super().connectionLost(reason)


class ListenerFactory(WrappingFactory):
    """Wraps a listener's protocol factory: admits or refuses each connection at the server-wide
    gate and counts it (``mailserve_connections_total`` and ``_active`` by protocol)."""

    protocol = CountedConnection

    def __init__(self, wrapped: Any, protocol: str, gate: ConnectionGate, metrics: Any, source: Any,
                 refusal: Callable[[str], bytes], reactor: Any) -> None:
        super().__init__(wrapped)
        self.protocol_name = protocol
        self.reactor = reactor
        self.gate = gate
        self.source = source
        self._refusal = refusal
        self._accepted = metrics.connections.labels(protocol=protocol) if metrics is not None else None
        self._active = metrics.connections_active.labels(protocol=protocol) if metrics is not None else None
        refused = getattr(metrics, "connections_refused", None)
        self._refused = refused.labels(protocol=protocol) if refused is not None else None

    def buildProtocol(self, addr: Any) -> Protocol | None:
        ip = getattr(addr, "host", "") or ""
        reason = self.gate.admit(ip)
        if reason is not None:
            if self._refused is not None:
                self._refused.inc()
            refusal = _Refusal(self._refusal(reason), self.reactor)
            refusal.factory = self
            return refusal
        try:
            inner = self.wrappedFactory.buildProtocol(addr)
        except BaseException:
            self.gate.release(ip)
            raise
        if inner is None:
            self.gate.release(ip)
            return None
        connection = self.protocol(self, inner)
        connection.ip = ip
        connection._counted = True
        if self._accepted is not None:
            self._accepted.inc()
            self._active.inc()
        return connection

    def closed(self, connection: CountedConnection) -> None:
        self.gate.release(connection.ip)
        if self._active is not None:
            self._active.dec()


class ListenerService(Service):
    """One ``[server.listener.ID]``: binds every address of it, reports ports in use by name.

    Binding happens in ``privilegedStartService`` so that twistd binds low ports before it
    drops privileges, and so that an address in use stops the start with a clear error.

    Every listener's factory is wrapped in a :class:`ListenerFactory`, so connection limits,
    connection metrics and the protocol label of authentication failures are handled once here
    for all protocols, not by each.
    """

    log = Logger()

    def __init__(self, server: MailServer, listener: ListenerConfig, factory: Any) -> None:
        self.server = server
        self.listener = listener
        protocol = listener.protocol
        metrics = getattr(server, "metrics", None)
        self.factory = ListenerFactory(
            factory, protocol, self._gate(server), metrics,
            AuthenticationSource.for_metrics(protocol, metrics), self._refusal, server.reactor)
        self.ports: list[Any] = []
        self.setName(f"listener:{listener.id}")

    @staticmethod
    def _gate(server: Any) -> ConnectionGate:
        """The server's one gate, shared by all its listeners (built once, with its other parts)."""
        def build() -> ConnectionGate:
            return ConnectionGate(lambda: server.config.server)

        part = getattr(server, "_part", None)
        return part("connection_gate", build) if part is not None else build()

    def _refusal(self, reason: str) -> bytes:
        protocol = self.listener.protocol
        if protocol == "http":
            # RFC 9110 §15.6.4: 503 with Retry-After; the connection is closed after it.
            body = json.dumps({"error": {"code": "unavailable", "message": f"{reason}; try again later"}}).encode()
            return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
        template = REFUSALS.get(protocol, "{reason}\r\n")
        return template.format(host=self.server.config.server.hostname, reason=reason).encode("utf-8")

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        super().startService()
        self._bind()

    def _bind(self) -> None:
        if self.ports:
            return
        reactor = self.server.reactor
        for address in self.listener.bind:
            host, port = address.host, address.port
            try:
                if self.listener.tls.implicit:
                    context = self.server.tls_context_factory()
                    listening = reactor.listenSSL(port, self.factory, context, interface=host)
                else:
                    listening = reactor.listenTCP(port, self.factory, interface=host)
            except CannotListenError as e:
                for p in self.ports:
                    p.stopListening()
                self.ports = []
                reason = e.socketError.strerror if getattr(e, "socketError", None) else str(e)
                raise StartupError(
                    f"listener {self.listener.id} ({self.listener.protocol}): cannot listen on "
                    f"{host}:{port}: {reason}"
                ) from None
            self.ports.append(listening)
            self.log.info(
                "{protocol} listening on {host}:{port}",
                protocol=self.listener.protocol,
                host=host,
                port=listening.getHost().port,
                listener=self.listener.id,
            )

    def addresses(self) -> list[tuple[str, int]]:
        """Where this listener actually listens (ports chosen by the OS for port 0)."""
        return [(p.getHost().host, p.getHost().port) for p in self.ports]

    def stopService(self):
        super().stopService()
        from twisted.internet.defer import gatherResults, maybeDeferred

        ports, self.ports = self.ports, []
        return gatherResults([maybeDeferred(p.stopListening) for p in ports])


@implementer(IServiceContainer, IService)
class MailServer(MultiService):
    """A whole mail server: the container every protocol is handed."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self._lock = DataDirectoryLock(config.server.data_dir)
        self._parts: dict[str, Any] = {}
        self._opened = False
        #: Set when this start created the first administrator (printed once, never stored).
        self.initial_admin_password: str | None = None
        from mailserve.web.metrics import ServerMetrics

        self.metrics = ServerMetrics(self)
        self.setName("mailserve")

    # -- builders: each part built once, on first use ----------------------------------
    def _part(self, name: str, build):
        if name not in self._parts:
            self._parts[name] = build()
        return self._parts[name]

    @property
    def metadata(self):
        from mailserve.storage import open_metadata_store

        return self._part("metadata", lambda: open_metadata_store(self.config, self.reactor))

    @property
    def blobs(self):
        from mailserve.storage import open_blob_store

        return self._part("blobs", lambda: open_blob_store(self.config))

    @property
    def search_index(self):
        from mailserve.storage import open_search_index

        return self._part("search_index", lambda: open_search_index(self.config))

    @property
    def core(self):
        from mailserve.core.mailcore import MailCore

        return self._part("core", lambda: MailCore(self.metadata, self.blobs, reactor=self.reactor))

    @property
    def directory(self):
        from mailserve.directory.directory import Directory
        from mailserve.directory.passwords import PasswordHashing
        from mailserve.directory.throttle import AuthThrottle

        auth = self.config.auth

        def build():
            return Directory(
                self.metadata,
                self.core,
                execute=self.metadata.write,
                hashing=PasswordHashing.from_config(auth),
                throttle=AuthThrottle(auth.max_failures_per_ip, 900.0),
            )

        return self._part("directory", build)

    @property
    def resolver(self):
        """The one DNS resolver (``mailserve.dns``) every part shares, as ``[dns]`` configures it."""
        from mailserve.dns import Resolver

        dns = self.config.dns
        return self._part("resolver", lambda: Resolver(
            servers=list(dns.nameservers) or None, timeout=dns.timeout, reactor=self.reactor,
            cache_entries=dns.cache_entries))

    @property
    def spam_filter(self):
        """The spam filter (``mailserve.spam``), or ``None`` when ``[spam] enabled = false``."""

        def build():
            if not self.config.spam.enabled:
                return None
            from mailserve.spam.filter import SpamFilter
            from mailserve.spam.settings import load_settings

            return SpamFilter(self.metadata, resolver=self.resolver, hostname=self.config.server.hostname,
                              settings=load_settings(self.config.spam.rules), clock=self.reactor)

        return self._part("spam_filter", build)

    @property
    def outbound_signer(self):
        """DKIM signing of submissions and ARC sealing of forwards (``mailserve.mailauth.outbound``).

        ``sign_submission(message, sender_domain)`` and ``seal_forward(message,
        authentication_results)`` both fire with the bytes to send on.
        """
        from mailserve.mailauth.outbound import OutboundSigner

        return self._part("outbound_signer", lambda: OutboundSigner.from_server(self))

    def spam_training(self, account_id: int, messages: list, spam: bool):
        """Teach ``account_id``'s Bayes database that ``messages`` (core message records) are spam or ham.

        IMAP calls it when a user moves mail into Junk (spam) or out of it (ham), as Dovecot's
        antispam plugin does.  Each message's bytes are read from the blob store in a worker
        thread, one at a time so a move of thousands of messages never holds them all in memory.
        Fires with the list of learn outcomes (empty when the spam filter is off).
        """
        from twisted.internet.defer import ensureDeferred, succeed
        from twisted.internet.threads import deferToThread

        spam_filter = self.spam_filter
        if spam_filter is None or not messages:
            return succeed([])

        async def train() -> list:
            outcomes = []
            for message in messages:
                raw = await deferToThread(self.blobs.get, message.blob_id)
                outcomes.append(await spam_filter.train(account_id, raw, spam))
            return outcomes

        return ensureDeferred(train())

    @property
    def outbound_queue(self):
        from mailserve.smtp.queue import OutboundQueue

        return self._part("outbound_queue", lambda: OutboundQueue.from_server(self))

    @property
    def delivery_pipeline(self):
        """The stages inbound mail passes before it is stored (``mailserve.smtp.stages``)."""
        from mailserve.smtp.stages import build_pipeline

        return self._part("delivery_pipeline", lambda: build_pipeline(self))

    @property
    def indexer(self):
        from mailserve.core.indexer import SearchIndexer

        return self._part(
            "indexer",
            lambda: SearchIndexer(
                self.core,
                self.search_index,
                batch_size=self.config.storage.index.batch_size,
                delay=self.config.storage.index.commit_interval,
            ),
        )

    def tls_context_factory(self):
        from mailserve.tls.certificates import CertificateStore

        store = self._part("certificates", lambda: CertificateStore.from_config(self.config))
        return store.context_factory()

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            return
        self._lock.acquire()
        try:
            self.metadata.start()
            self._bootstrap_administrator()
            self.indexer.setServiceParent(self)
            self.outbound_queue.setServiceParent(self)
            for listener in self.config.listeners:
                builder = protocol_builder(listener.protocol)
                if builder is None:
                    raise StartupError(
                        f"listener {listener.id}: protocol {listener.protocol!r} is not available "
                        "in this version of mailserve; remove the listener from the configuration"
                    )
                ListenerService(self, listener, builder(self, listener)).setServiceParent(self)
        except BaseException:
            self._close_stores()
            raise
        self._opened = True

    def _bootstrap_administrator(self) -> None:
        """On first start, create ``admin`` with a random password, as Stalwart does."""
        from mailserve.cli import ensure_administrator
        from mailserve.directory.directory import Directory

        directory = self.directory
        sync = Directory(self.metadata, self.core, execute=self.metadata.write_sync, hashing=directory.hashing)
        password = ensure_administrator(sync)
        if password:
            self.initial_admin_password = password
            self.log.warn("created administrator 'admin' (password shown once in the start banner)")

    def privilegedStartService(self) -> None:
        self._open()
        try:
            super().privilegedStartService()
        except BaseException:
            self._close_stores()
            raise

    def startService(self) -> None:
        self._open()
        super().startService()
        self.log.info(
            "mailserve started: hostname {hostname}, data in {data_dir}",
            hostname=self.config.server.hostname,
            data_dir=self.config.server.data_dir,
        )

    def stopService(self):
        d = super().stopService()

        def closed(result):
            self._close_stores()
            self.log.info("mailserve stopped")
            return result

        return d.addBoth(closed)

    def _close_stores(self) -> None:
        for name in ("search_index", "metadata"):
            part = self._parts.pop(name, None)
            if part is not None:
                part.close()
        self._parts.clear()
        for child in list(self):
            child.disownServiceParent()
        self._opened = False
        self._lock.release()

    def listening(self) -> dict[str, list[tuple[str, int]]]:
        """Listener id -> the addresses it listens on (for tests and the start banner)."""
        return {
            s.listener.id: s.addresses() for s in self if isinstance(s, ListenerService)
        }


def makeService(config: Config | dict | str) -> MailServer:
    """Build the mail server for ``config`` (a Config, a dict of TOML data, or a file path)."""
    from mailserve import config as config_module

    if isinstance(config, str):
        config = config_module.load_config(config)
    elif isinstance(config, dict):
        config = config_module.Config.from_dict(config)
    return MailServer(config)
