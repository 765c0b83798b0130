"""The IMAP listener's protocol factory, and the session state every IMAP listener shares.

``build(server, listener)`` is what ``mailserve.service`` calls for every
``[server.listener.ID]`` with ``protocol = "imap"``.  Connections in total and per client
address are limited once for every protocol by the service's connection gate, which
wraps this factory.  What IMAP sessions of one server share, whichever listener (143 or
993) they came in on, is one ``IMAPSessions``: the count of authenticated sessions per
user (so one account cannot take every slot) and the ``\\Recent`` claims of RFC 3501
§2.3.2 (the first session to see a message gets it as recent; kept in memory, like
Dovecot's in-memory fallback, so it resets on restart).  Nothing is global: a second
server in the same process has its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from mailserve.config import ListenerConfig
from mailserve.imap.protocol import IMAPServerProtocol


class IMAPSessions:
    """Sessions per user and ``\\Recent`` claims, shared by the IMAP listeners of one server."""

    def __init__(self) -> None:
        self.per_user: Counter[int] = Counter()
        #: (account, mailbox) -> highest UID a session has been shown as \\Recent.
        self.recent_claims: dict[tuple[int, int], int] = {}

    @classmethod
    def of(cls, server: Any) -> IMAPSessions:
        """The server's one instance, made by its first IMAP listener."""
        return server.shared("imap_sessions", cls)


class IMAPFactory(Factory):
    log = Logger()

    def __init__(self, server: Any, listener: ListenerConfig) -> None:
        self.server = server
        self.listener = listener
        self.sessions = IMAPSessions.of(server)
        self.per_user = self.sessions.per_user
        self.recent_claims = self.sessions.recent_claims
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
        protocol = IMAPServerProtocol(self, secure=self.listener.tls.implicit)
        protocol.factory = self
        return protocol

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
    """The factory for one IMAP listener (``mailserve.listeners.PROTOCOLS``)."""
    return IMAPFactory(server, listener)
