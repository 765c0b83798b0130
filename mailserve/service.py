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
import os
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from zope.interface import implementer

from mailserve.config import Config
from mailserve.interfaces import IServiceContainer
from mailserve.listeners import PROTOCOLS, ListenerService, StartupError, protocol_builder

__all__ = ["PROTOCOLS", "MailServer", "StartupError", "makeService", "protocol_builder"]


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

    def shared(self, name: str, build):
        """One object per server for state that several listeners share, built on first use.

        (The IMAP listeners' session counts, the connection gate.)  Kept with the server's other
        parts so that two servers in one process never share it.
        """
        return self._part(name, build)

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
