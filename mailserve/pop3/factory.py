"""The POP3 listener builder named in ``mailserve.listeners.PROTOCOLS``."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import ServerFactory

from mailserve.config import ListenerConfig
from mailserve.pop3.maildrop import MaildropLocks
from mailserve.pop3.protocol import POP3Context, POP3Session


class POP3Factory(ServerFactory):
    """Builds a ``POP3Session`` per connection, all sharing one ``POP3Context``."""

    def __init__(self, context: POP3Context) -> None:
        self.context = context

    def buildProtocol(self, addr: Any) -> POP3Session:
        session = POP3Session(self.context)
        session.factory = self
        return session


def maildrop_locks(server: Any) -> MaildropLocks:
    """The server's one ``MaildropLocks``: POP3 and POP3S listeners must share the maildrop lock.

    Kept among the server's built-once parts, so two servers in one process never share it.
    """
    return server._part("pop3.maildrop_locks", MaildropLocks)


def build(server: Any, listener: ListenerConfig) -> POP3Factory:
    """``build(server, listener)``: the factory for one ``[server.listener.ID]`` of protocol pop3."""
    config = server.config
    context = POP3Context(
        core=server.core,
        directory=server.directory,
        locks=maildrop_locks(server),
        hostname=config.server.hostname,
        implicit_tls=listener.tls.implicit,
        starttls=listener.tls.starttls and config.tls.has_default_certificate,
        allow_plaintext_auth=listener.allow_plaintext_auth,
        settings=lambda: server.config.pop3,
        max_auth_failures=config.pop3.max_auth_failures,
        tls_context_factory=server.tls_context_factory,
        reactor=server.reactor,
    )
    return POP3Factory(context)
