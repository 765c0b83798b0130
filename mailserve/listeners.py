"""Listening sockets: one ``ListenerService`` per ``[server.listener.ID]``, and what every
connection passes before its protocol sees it.

Connection limits (server-wide and per client address), connection metrics and the protocol
label of authentication failures are handled once here for all protocols, so that SMTP, IMAP,
POP3, ManageSieve and HTTP do not each carry their own copy.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from mailserve.config import ListenerConfig
from mailserve.directory.credentials import AuthenticationSource, authentication_source

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

    def __init__(self, server: Any, listener: ListenerConfig, factory: Any) -> None:
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

        return server.shared("connection_gate", build)

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
