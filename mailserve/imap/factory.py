"""The IMAP listener's protocol factory: connection limits and state shared by sessions.

``build(server, listener)`` is what ``mailserve.service`` calls for every
``[server.listener.ID]`` with ``protocol = "imap"``.  The factory holds what sessions of
one listener share and nothing global: counts of connections per client address and of
sessions per user (so one address or one account cannot take every slot), and the
``\\Recent`` claims of RFC 3501 §2.3.2 (the first session to see a message gets it as
recent; kept in memory, like Dovecot's in-memory fallback, so it resets on restart).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from mailserve.config import ListenerConfig
from mailserve.imap.protocol import IMAPServerProtocol


class _Refusal(Protocol):
    """Says why the connection is refused (RFC 9051 §7.1.5 BYE greeting) and hangs up."""

    def __init__(self, reason: bytes) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        self.transport.write(b"* BYE [UNAVAILABLE] " + self.reason + b"\r\n")
        self.transport.loseConnection()


class IMAPFactory(Factory):
    log = Logger()

    def __init__(self, server: Any, listener: ListenerConfig) -> None:
        self.server = server
        self.listener = listener
        self.connections: set[IMAPServerProtocol] = set()
        self.per_ip: Counter[str] = Counter()
        self.per_user: Counter[int] = Counter()
        self.recent_claims: dict[tuple[int, int], int] = {}
        self._mail_search: Any = None

    def mail_search(self) -> Any:
        """The account-wide exact full-text search (``mailserve.core.search``), built once."""
        if self._mail_search is None:
            try:
                from mailserve.core.search import MailSearch
            except ImportError:  # a build without the full-text search: BODY/TEXT are refused
                return None
            server = self.server
            self._mail_search = MailSearch(server.core, server.search_index, server.indexer)
        return self._mail_search

    def buildProtocol(self, addr: Any) -> Protocol:
        limits = self.server.config.server
        ip = getattr(addr, "host", "")
        if len(self.connections) >= limits.max_connections:
            return _Refusal(b"Too many connections; try again later")
        if self.per_ip[ip] >= limits.max_connections_per_ip:
            return _Refusal(b"Too many connections from your address")
        protocol = IMAPServerProtocol(self, secure=self.listener.tls.implicit)
        protocol.factory = self
        self.connections.add(protocol)
        self.per_ip[ip] += 1
        protocol.counted_ip = ip
        return protocol

    def connection_closed(self, protocol: IMAPServerProtocol) -> None:
        if protocol in self.connections:
            self.connections.discard(protocol)
            ip = getattr(protocol, "counted_ip", "")
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]

    def session_started(self, account_id: int) -> bool:
        """Count an authenticated session; False when the user has too many already."""
        if self.per_user[account_id] >= self.server.config.imap.max_sessions_per_user:
            return False
        self.per_user[account_id] += 1
        return True

    def session_ended(self, account_id: int) -> None:
        self.per_user[account_id] -= 1
        if self.per_user[account_id] <= 0:
            del self.per_user[account_id]


def build(server: Any, listener: ListenerConfig) -> IMAPFactory:
    """The factory for one IMAP listener (``mailserve.service.PROTOCOLS``)."""
    return IMAPFactory(server, listener)
