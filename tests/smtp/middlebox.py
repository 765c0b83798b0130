"""A TCP middlebox in front of a real SMTP server, for the peer behaviours tests need.

It forwards everything between our outbound queue and a real mailserve, and can change the
two things real networks change: it can hide EHLO keywords (an older MTA without 8BITMIME or
SMTPUTF8), and it can break STARTTLS the way some firewalls do (it answers ``220`` itself and
then refuses the TLS handshake with a fatal alert) or refuse it with ``454``.  It records the client's command lines
and counts connections, so tests can check what our client sent.
"""

from __future__ import annotations

from twisted.internet import defer, protocol
from twisted.protocols.basic import LineReceiver

#: A TLS 1.0 record: alert, fatal, handshake_failure (RFC 5246 §7.2).
TLS_HANDSHAKE_FAILURE = b"\x15\x03\x01\x00\x02\x02\x28"


class _Upstream(protocol.Protocol):
    """The middlebox's connection to the real server; replies pass through a keyword filter."""

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream
        self.buffer = b""
        self.reply: list[bytes] = []

    def connectionMade(self) -> None:
        self.downstream.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if self.downstream.passthrough and not self.reply and not self.buffer:
            self.downstream.transport.write(data)
            return
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.reply.append(line.rstrip(b"\r"))
            if line[3:4] != b"-":
                self._flush()
                if self.downstream.passthrough:
                    # The reply to STARTTLS: from here on the bytes are TLS records.
                    rest, self.buffer = self.buffer, b""
                    if rest:
                        self.downstream.transport.write(rest)
                    return

    def _flush(self) -> None:
        hidden = self.downstream.box.hidden
        lines = [self.reply[0]] + [line for line in self.reply[1:] if line[4:].split(b" ")[0].upper() not in hidden]
        self.reply = []
        code = lines[0][:3]
        for index, line in enumerate(lines):
            mark = b" " if index == len(lines) - 1 else b"-"
            self.downstream.transport.write(code + mark + line[4:] + b"\r\n")

    def connectionLost(self, reason=None) -> None:
        self.downstream.transport.loseConnection()


class _Downstream(LineReceiver):
    """The side our SMTP client talks to."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, box: Middlebox) -> None:
        self.box = box
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.tls_refused = False
        self.in_data = False
        #: After a STARTTLS that is let through, bytes are forwarded untouched (and unseen).
        self.passthrough = False

    def connectionMade(self) -> None:
        self.box.connections += 1
        from twisted.internet import reactor

        factory = protocol.ClientFactory()
        factory.protocol = lambda: _Upstream(self)
        reactor.connectTCP(self.box.target[0], self.box.target[1], factory)

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for line in self.pending:
            upstream.transport.write(line + b"\r\n")
        self.pending = []

    def lineReceived(self, line: bytes) -> None:
        if not self.in_data:
            self.box.commands.append(line.decode("utf-8", "replace"))
            if self.box.refuse_ehlo and line[:5].upper() == b"EHLO ":
                self.transport.write(b"500 5.5.1 Command unrecognized\r\n")
                return
            if self.box.refuse_tls and line.upper() == b"STARTTLS":
                self.transport.write(b"454 4.7.0 TLS not available due to local problem\r\n")
                return
            if self.box.break_tls and line.upper() == b"STARTTLS":
                self.tls_refused = True
                self.transport.write(b"220 2.0.0 Ready to start TLS\r\n")
                self.setRawMode()
                return
            if line.upper() == b"STARTTLS":
                self.passthrough = True
                self.setRawMode()
            elif line.upper() == b"DATA":
                self.in_data = True
        elif line == b".":
            self.in_data = False
        if self.upstream is None:
            self.pending.append(line)
        else:
            self.upstream.transport.write(line + b"\r\n")

    def rawDataReceived(self, data: bytes) -> None:
        if self.passthrough:
            self.upstream.transport.write(data)
            return
        # The client's TLS ClientHello: refuse it as a server with no shared cipher would.
        self.transport.write(TLS_HANDSHAKE_FAILURE)
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class Middlebox:
    """Listen on ``listen`` (host, port: 0 for any) and forward to ``target``."""

    def __init__(self, target: tuple[str, int], hidden: tuple[str, ...] = (), break_tls: bool = False,
                 refuse_tls: bool = False, refuse_ehlo: bool = False) -> None:
        self.target = target
        self.hidden = {k.upper().encode() for k in hidden}
        self.break_tls = break_tls
        self.refuse_tls = refuse_tls
        #: Play an RFC 821 server: EHLO unknown, so HELO and no extensions at all.
        self.refuse_ehlo = refuse_ehlo
        self.connections = 0
        self.commands: list[str] = []
        self.port = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Middlebox:
        from twisted.internet import reactor

        factory = protocol.ServerFactory()
        factory.protocol = lambda: _Downstream(self)
        self.port = reactor.listenTCP(port, factory, interface=host)
        return self

    @property
    def address(self) -> tuple[str, int]:
        address = self.port.getHost()
        return address.host, address.port

    def stop(self) -> defer.Deferred:
        return defer.maybeDeferred(self.port.stopListening)
