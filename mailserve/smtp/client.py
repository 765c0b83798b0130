"""Outbound SMTP client: one connection, any number of transactions (RFC 5321 §3.3, §4.1).

Used by the outbound queue to deliver to MX hosts and smarthosts.  It speaks EHLO (falling
back to HELO), opportunistic or required STARTTLS (RFC 3207; a failed handshake is reported
as :class:`TLSHandshakeFailed` so that the caller can retry in the clear), AUTH PLAIN (RFC 4954) for
smarthosts, PIPELINING of MAIL/RCPT/DATA when offered (RFC 2920), and passes SIZE, BODY,
SMTPUTF8 and the DSN parameters (RFC 3461 §4) when the server offers them.  Every wait for a
reply is bounded, so a silent server cannot hold a delivery forever.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver

from mailserve.smtp.syntax import xtext_encode

__all__ = ["SMTPClientError", "SMTPConnection", "SMTPReply", "TLSHandshakeFailed", "TransactionResult", "connect"]

#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; be generous with broken servers.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
#: RFC 5321 §4.5.3.2.6: the client waits 10 minutes for the reply to the end of data.
DATA_TERMINATION_TIMEOUT = 600.0


@dataclass(frozen=True)
class SMTPReply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def status(self) -> str:
        """The enhanced status code of the reply (RFC 3463), or one derived from the basic code."""
        first = self.text.split(" ", 1)[0]
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] in "245":
            return first
        return f"{str(self.code)[0]}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SMTPClientError(Exception):
    """The conversation broke: timeout, lost connection, or a reply the session cannot go on from."""

    def __init__(self, message: str, reply: SMTPReply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class TLSHandshakeFailed(SMTPClientError):
    """The server said ``220`` to STARTTLS but no TLS session came of it.

    The connection is unusable afterwards (RFC 3207 §4.1: the client must close it).  With
    opportunistic TLS the caller may retry the same host in the clear, as Postfix does at
    ``smtp_tls_security_level = may`` (RFC 7435 §4.1: fall back rather than fail).
    """


class _ReplyReader(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(self, reactor: Any, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self._lines: list[str] = []
        self._ready: deque[SMTPReply] = deque()
        self._waiting: deque[defer.Deferred] = deque()
        self._lost: Exception | None = None

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            self._fail(SMTPClientError(f"malformed reply line {text[:80]!r}"))
            return
        self._lines.append(text[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            self._fail(SMTPClientError("reply too long"))
            return
        if len(text) > 3 and text[3] == "-":
            return
        reply = SMTPReply(int(text[:3]), "\n".join(self._lines))
        self._lines = []
        if self._waiting:
            self._waiting.popleft().callback(reply)
        else:
            self._ready.append(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._fail(SMTPClientError("reply line too long"))

    def _fail(self, error: Exception) -> None:
        self._lost = error
        while self._waiting:
            self._waiting.popleft().errback(error)
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._lost is None:
            self._lost = SMTPClientError(f"connection lost: {reason.getErrorMessage() if reason else ''}")
        while self._waiting:
            self._waiting.popleft().errback(self._lost)

    def read(self, timeout: float | None = None) -> defer.Deferred:
        """The next reply; fails after ``timeout`` (default: the connection's) seconds of waiting."""
        if self._ready:
            return defer.succeed(self._ready.popleft())
        if self._lost is not None:
            return defer.fail(self._lost)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        timeout = self.timeout if timeout is None else timeout
        timer = self.reactor.callLater(timeout, self._timed_out, d, timeout)

        def cancel_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(cancel_timer)

    def _timed_out(self, d: defer.Deferred, timeout: float) -> None:
        if not d.called:
            self._fail(SMTPClientError(f"no reply within {timeout:g} seconds"))

    def write_line(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")


@dataclass
class TransactionResult:
    """Replies to one transaction: MAIL, each RCPT (in order), and DATA (``None`` if never sent)."""

    mail: SMTPReply
    recipients: list[SMTPReply]
    data: SMTPReply | None


class SMTPConnection:
    """An established session; use :func:`connect` to get one."""

    def __init__(self, protocol: _ReplyReader, host: str) -> None:
        self.protocol = protocol
        self.host = host
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.data_timeout = DATA_TERMINATION_TIMEOUT

    async def command(self, line: str) -> SMTPReply:
        self.protocol.write_line(line)
        return await self.protocol.read()

    async def ehlo(self, name: str) -> None:
        reply = await self.command(f"EHLO {name}")
        if reply.code != 250:
            reply = await self.command(f"HELO {name}")
            if reply.code != 250:
                raise SMTPClientError(f"HELO refused: {reply}", reply)
            self.extensions = {}
            return
        self.extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, value = line.partition(" ")
            self.extensions[keyword.upper()] = value

    async def starttls(self, options: Any, name: str, required: bool = True) -> None:
        """RFC 3207 §4: upgrade, then EHLO again (everything learned before TLS is forgotten).

        A refusal of the command leaves the session usable in the clear; when TLS is not
        ``required`` that is where it carries on (RFC 7435 §4.1).  A failure after ``220``
        raises :class:`TLSHandshakeFailed`.
        """
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            if required:
                raise SMTPClientError(f"STARTTLS refused: {reply}", reply)
            return
        self.protocol.transport.startTLS(options)
        self.tls = True
        try:
            await self.ehlo(name)
        except SMTPClientError as e:
            raise TLSHandshakeFailed(f"TLS with {self.host} failed: {e}", e.reply) from None

    async def authenticate(self, username: str, password: str) -> None:
        if "PLAIN" not in self.extensions.get("AUTH", "").upper().split():
            raise SMTPClientError("server does not offer AUTH PLAIN")
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        reply = await self.command(f"AUTH PLAIN {token}")
        if reply.code != 235:
            raise SMTPClientError(f"authentication failed: {reply}", reply)

    async def send(
        self,
        mail_from: str,
        recipients: list[tuple[str, tuple[str, ...], str | None]],
        message: bytes,
        *,
        envid: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        body: str = "7BIT",
    ) -> TransactionResult:
        """One transaction; each recipient is ``(address, notify, orcpt)``.

        Recipients refused at RCPT are reported in the result; DATA is sent if any was accepted.
        """
        ext = self.extensions
        params = []
        if "SIZE" in ext:
            params.append(f"SIZE={len(message)}")
        if body == "8BITMIME" and "8BITMIME" in ext:
            params.append("BODY=8BITMIME")
        if smtputf8 and "SMTPUTF8" in ext:
            params.append("SMTPUTF8")
        dsn = "DSN" in ext
        if dsn and ret:
            params.append(f"RET={ret}")
        if dsn and envid:
            params.append(f"ENVID={xtext_encode(envid)}")
        lines = [f"MAIL FROM:<{mail_from}>" + "".join(" " + p for p in params)]
        for address, notify, orcpt in recipients:
            rcpt = f"RCPT TO:<{address}>"
            if dsn and notify:
                rcpt += f" NOTIFY={','.join(notify)}"
            if dsn and orcpt:
                addr_type, _, value = orcpt.partition(";")
                rcpt += f" ORCPT={addr_type};{xtext_encode(value)}"
            lines.append(rcpt)
        pipelining = "PIPELINING" in ext
        replies: list[SMTPReply] = []
        if pipelining:
            for line in lines:
                self.protocol.write_line(line)
            for _ in lines:
                replies.append(await self.protocol.read())
        else:
            for line in lines:
                reply = await self.command(line)
                replies.append(reply)
                if line.startswith("MAIL") and not reply.ok:
                    break
        mail_reply = replies[0]
        if not mail_reply.ok:
            rcpt_replies = [mail_reply] * len(recipients)
            await self._reset()
            return TransactionResult(mail_reply, rcpt_replies, None)
        rcpt_replies = replies[1:]
        if not any(r.ok for r in rcpt_replies):
            await self._reset()
            return TransactionResult(mail_reply, rcpt_replies, None)
        reply = await self.command("DATA")
        if reply.code != 354:
            await self._reset()
            return TransactionResult(mail_reply, rcpt_replies, reply)
        self.protocol.transport.write(_dot_stuff(message))
        # RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the final dot, which
        # the server may send only after storing (or filtering) the message; giving up early
        # would make us send it again.
        data_reply = await self.protocol.read(self.data_timeout)
        return TransactionResult(mail_reply, rcpt_replies, data_reply)

    async def _reset(self) -> None:
        try:
            await self.command("RSET")
        except SMTPClientError:
            pass

    async def quit(self) -> None:
        try:
            await self.command("QUIT")
        except SMTPClientError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.loseConnection()


def _dot_stuff(message: bytes) -> bytes:
    """RFC 5321 §4.5.2: double leading dots, normalise line ends, end with CRLF.CRLF."""
    if not message.endswith(b"\n"):
        message += b"\r\n"
    message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def connect(
    reactor: Any,
    address: str,
    port: int,
    helo_name: str,
    *,
    host_name: str | None = None,
    tls: str = "opportunistic",
    tls_options: Any = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 60.0,
    data_timeout: float = DATA_TERMINATION_TIMEOUT,
) -> SMTPConnection:
    """Connect, read the greeting, EHLO, and do TLS/AUTH as asked.

    ``tls`` is ``opportunistic`` (STARTTLS when offered, RFC 3207 §4 and RFC 7435), ``starttls``
    (required: fail without it), ``implicit`` (RFC 8314) or ``none``.  ``timeout`` bounds the
    wait for each reply, ``data_timeout`` the wait for the reply to the end of data.
    """
    protocol = _ReplyReader(reactor, timeout)
    if tls == "implicit":
        endpoint = SSL4ClientEndpoint(reactor, address, port, tls_options, timeout=timeout)
    elif ":" in address:
        endpoint = TCP6ClientEndpoint(reactor, address, port, timeout=timeout)
    else:
        endpoint = TCP4ClientEndpoint(reactor, address, port, timeout=timeout)
    try:
        await connectProtocol(endpoint, protocol)
    except Exception as e:  # noqa: BLE001 - every connect error is "try the next host"
        raise SMTPClientError(f"cannot connect to {address}:{port}: {e}") from None
    connection = SMTPConnection(protocol, host_name or address)
    connection.tls = tls == "implicit"
    connection.data_timeout = data_timeout
    try:
        greeting = await protocol.read()
        if greeting.code != 220:
            raise SMTPClientError(f"greeting refused: {greeting}", greeting)
        await connection.ehlo(helo_name)
        if tls in ("opportunistic", "starttls") and "STARTTLS" in connection.extensions:
            await connection.starttls(tls_options, helo_name, required=tls == "starttls")
        elif tls == "starttls":
            raise SMTPClientError(f"{address}:{port} does not offer STARTTLS, which is required")
        if username:
            await connection.authenticate(username, password or "")
    except BaseException:
        connection.close()
        raise
    return connection
