"""The durable outbound queue: messages waiting for remote delivery, with per-recipient status.

Storage.  Each queued message is one record in the metadata store (``keys.queue_entry``)
holding the envelope and every recipient's status, plus one schedule key
(``keys.queue_schedule``: due time, id) that orders entries by their next attempt.  The
bytes live in the blob store, counted in the same ``blob_refs`` counters the core uses, so
the core's garbage collector never removes a queued message's bytes.  ``enqueue`` fires only
after the record is committed: an SMTP ``250`` for a relayed message means it is in here,
and survives restart and ``kill -9``.

Delivery.  ``OutboundQueue`` is an ``IService``.  While running it wakes when the earliest
entry is due (and at least every ``POLL_INTERVAL`` so that ``mailserve queue retry`` from the
CLI is seen), groups the due recipients by destination domain (or all of them, with a
smarthost), resolves MX hosts (``mailserve.smtp.mx``), and delivers each destination's
messages over one connection (connection reuse, RFC 5321 §3.3 allows many transactions per
session).  TLS is opportunistic: used when offered, and a failed handshake is retried in the
clear (RFC 7435).  What each peer gets depends on what it offers: 8-bit content is converted
to 7 bits for a peer without 8BITMIME (RFC 6152 §3), and SMTPUTF8 mail that needs it cannot
go to a peer without SMTPUTF8 (RFC 6531 §3.2, bounced with 5.6.7).  Results update the record in one transaction, together with any DSN the sender
is owed, so a report is queued exactly once:

* ``2xx``: the recipient is done; a ``delivered``/``relayed`` DSN if NOTIFY=SUCCESS was asked
  and the next hop cannot report it itself (RFC 3461 §5.2.2).
* ``5xx``: the recipient failed; a ``failed`` DSN (RFC 3464) unless NOTIFY said otherwise.
* ``4xx`` or no connection: retried after ``retry_initial``, doubling up to ``retry_max``
  (RFC 5321 §4.5.4.1), until ``queue_lifetime`` has passed, then failed with 4.4.7; one
  ``delayed`` DSN after ``delay_notice_after``.

Reports to local senders are queued like any message and delivered locally by the same
runner; reports are never sent for a message from the null reverse-path (RFC 5321 §4.5.5).

Local recipients.  Queued mail for a local address (a DSN to a local sender, a Sieve redirect
or vacation reply to a local user) passes the recipient's own Sieve script before it is
stored, as Pigeonhole's LDA does for such mail: the server's ``sieve`` delivery stage runs on
it (``LOCAL_STAGES``), not mail authentication or the spam verdict, because the mail is our
own.  Loops stay closed: a vacation reply comes from the null reverse-path with
``Auto-Submitted: auto-replied``, to which no vacation action answers (RFC 5230 §4.5, RFC
3834 §2), and redirects carry ``Delivered-To:`` (``mailserve.sieve.stage``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserve.core import keys
from mailserve.core.model import pack, unpack
from mailserve.smtp.client import DATA_TERMINATION_TIMEOUT, SMTPClientError, SMTPReply, TLSHandshakeFailed, connect
from mailserve.smtp.downgrade import ConversionImpossible, break_long_lines, convert_for_peer, has_8bit
from mailserve.smtp.dsn import RecipientReport, build_report
from mailserve.smtp.mx import MailHost, NoMailService, RouteTemporaryFailure, resolve_mail_hosts

__all__ = ["OutboundQueue", "QueueEntry", "QueueStore", "QueuedRecipient"]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: Longest sleep between schedule scans (changes made by the CLI are seen within it).
POLL_INTERVAL = 30.0
#: Entries taken per scan; the rest wait for the next one.
BATCH = 200
#: Destinations delivered to at the same time.
PARALLEL_DESTINATIONS = 10
#: Stages of the server's delivery pipeline that queued mail for local recipients passes.
LOCAL_STAGES = ("sieve",)


@dataclass
class QueuedRecipient:
    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    status: str = PENDING
    reply: str = ""
    remote_mta: str = ""
    changed: float = 0.0

    def wants(self, kind: str) -> bool:
        """RFC 3461 §4.1: no NOTIFY means failures and delays are reported, never successes."""
        return kind in self.notify if self.notify else kind in ("FAILURE", "DELAY")


@dataclass
class QueueEntry:
    """One queued message; stored as msgpack of ``asdict``."""

    id: int
    blob_id: str
    size: int
    mail_from: str
    recipients: list[QueuedRecipient]
    created: float
    next_attempt: float
    attempts: int = 0
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    body: str = "7BIT"
    delay_notified: bool = False
    last_error: str = ""
    arrival: float = 0.0

    def to_bytes(self) -> bytes:
        return pack(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> QueueEntry:
        raw = unpack(data)
        raw["recipients"] = [QueuedRecipient(**{**r, "notify": tuple(r["notify"])}) for r in raw["recipients"]]
        return cls(**raw)

    @property
    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.status == PENDING]

    def public(self) -> dict[str, Any]:
        """What ``mailserve queue show --json`` prints."""
        return asdict(self)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class QueueStore:
    """The queue's records: pure transaction functions, used by the service and by the CLI."""

    @staticmethod
    def add_txn(txn: Any, entry: QueueEntry) -> QueueEntry:
        entry = replace(entry, id=txn.incr(keys.QUEUE_NEXT_ID))
        txn.incr(keys.blob_refs(entry.blob_id))
        txn.put(keys.queue_entry(entry.id), entry.to_bytes())
        txn.put(keys.queue_schedule(_ms(entry.next_attempt), entry.id), b"")
        return entry

    @staticmethod
    def get_txn(txn: Any, entry_id: int) -> QueueEntry | None:
        data = txn.get(keys.queue_entry(entry_id))
        return None if data is None else QueueEntry.from_bytes(data)

    @staticmethod
    def list_txn(txn: Any) -> list[QueueEntry]:
        return [QueueEntry.from_bytes(v) for _, v in txn.scan(keys.QUEUE_ENTRIES_PREFIX)]

    @staticmethod
    def due_txn(txn: Any, now: float, limit: int) -> list[int]:
        ids = []
        for key, _ in txn.scan(keys.QUEUE_SCHEDULE_PREFIX, keys.queue_schedule(_ms(now) + 1, 0)):
            ids.append(keys.queue_schedule_parts(key)[1])
            if len(ids) >= limit:
                break
        return ids

    @staticmethod
    def next_due_txn(txn: Any) -> float | None:
        for key, _ in txn.scan(keys.QUEUE_SCHEDULE_PREFIX):
            return keys.queue_schedule_parts(key)[0] / 1000.0
        return None

    @staticmethod
    def update_txn(txn: Any, old: QueueEntry, new: QueueEntry) -> None:
        txn.delete(keys.queue_schedule(_ms(old.next_attempt), old.id))
        txn.put(keys.queue_entry(new.id), new.to_bytes())
        txn.put(keys.queue_schedule(_ms(new.next_attempt), new.id), b"")

    @staticmethod
    def remove_txn(txn: Any, entry: QueueEntry) -> bool:
        """Delete an entry; ``True`` when its blob lost its last reference (delete the bytes)."""
        txn.delete(keys.queue_schedule(_ms(entry.next_attempt), entry.id))
        txn.delete(keys.queue_entry(entry.id))
        if txn.incr(keys.blob_refs(entry.blob_id), -1) <= 0:
            txn.delete(keys.blob_refs(entry.blob_id))
            txn.delete(keys.parsed(entry.blob_id))
            return True
        return False

    @classmethod
    def retry_txn(cls, txn: Any, entry_id: int, now: float) -> QueueEntry | None:
        """Make an entry due now (``mailserve queue retry``)."""
        entry = cls.get_txn(txn, entry_id)
        if entry is None:
            return None
        updated = replace(entry, next_attempt=now)
        cls.update_txn(txn, entry, updated)
        return updated


@dataclass
class _Outcome:
    status: str  # delivered | failed | deferred
    reply: str
    remote_mta: str = ""
    relayed: bool = False
    status_code: str = ""
    #: The next hop took on DSN duties (it offered DSN and got our NOTIFY): no report from us.
    passed_on: bool = False


@dataclass
class _Work:
    entry: QueueEntry
    outstanding: int
    outcomes: dict[int, _Outcome] = field(default_factory=dict)


class OutboundQueue(Service):
    """The queue and the service that delivers it (see the module docstring)."""

    log = Logger()
    name = "outbound-queue"

    def __init__(
        self,
        metadata: Any,
        blobs: Any,
        smtp_config: Any,
        hostname: str,
        resolver: Any = None,
        reactor: Any = None,
        local_delivery: Any = None,
        directory: Any = None,
        port: int = 25,
        timeout: float = 300.0,
        tls_options: Any = None,
        clock: Callable[[], float] = time.time,
        local_pipeline: Callable[[], Any] | None = None,
        metrics: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.metadata = metadata
        self.blobs = blobs
        self.config = smtp_config
        self.hostname = hostname
        self.resolver = resolver
        self.reactor = reactor
        self.local_delivery = local_delivery
        self.directory = directory
        #: The port MX hosts are delivered to: 25 (RFC 5321 §4.5.4); tests point it elsewhere.
        self.port = port
        self.timeout = timeout
        #: How long the peer may take to answer the final dot (RFC 5321 §4.5.3.2.6: 10 minutes).
        self.data_timeout = DATA_TERMINATION_TIMEOUT
        self.tls_options = tls_options
        self.clock = clock
        #: ``ServerMetrics`` (``mailserve_deliveries_total`` by result), or ``None``.
        self.metrics = metrics
        #: Returns the server's ``DeliveryPipeline`` (called at the first local delivery, since
        #: the pipeline's Sieve stage itself queues into this queue); ``None``: store directly.
        self._server_pipeline = local_pipeline
        self._local_stages: Any = None
        self._timer: Any = None
        self._running_batch: defer.Deferred | None = None
        self._in_flight: set[int] = set()
        self._tasks: set[defer.Deferred] = set()
        self._semaphore = defer.DeferredSemaphore(PARALLEL_DESTINATIONS)

    @classmethod
    def from_server(cls, server: Any, **kwargs: Any) -> OutboundQueue:
        """Build the queue of an assembled ``MailServer`` (what ``service.py`` calls)."""
        from mailserve.smtp.delivery import LocalDelivery

        resolver = kwargs.pop("resolver", None) or getattr(server, "resolver", None)
        if resolver is None:
            from mailserve.dns import Resolver

            resolver = Resolver(reactor=server.reactor)
        return cls(
            server.metadata,
            server.blobs,
            server.config.smtp,
            server.config.server.hostname,
            resolver=resolver,
            reactor=server.reactor,
            local_delivery=LocalDelivery(server.core, server.config.smtp.quota_full_permanent),
            directory=server.directory,
            tls_options=kwargs.pop("tls_options", None) or _opportunistic_tls(),
            metrics=kwargs.pop("metrics", None) or getattr(server, "metrics", None),
            local_pipeline=kwargs.pop("local_pipeline", None) or (lambda: server.delivery_pipeline),
            **kwargs,
        )

    # -- threads ------------------------------------------------------------------------------
    def _in_thread(self, fn: Callable, *args: Any) -> defer.Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    # -- adding --------------------------------------------------------------------------------
    def enqueue(
        self,
        mail_from: str,
        recipients: Iterable[tuple[str, tuple[str, ...], str | None]],
        message: bytes,
        *,
        envid: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        body: str = "7BIT",
        arrival: float | None = None,
    ) -> defer.Deferred:
        """Queue ``message``; fires with the entry id once it is durable (bytes and record)."""
        return defer.ensureDeferred(self._enqueue(mail_from, list(recipients), message, envid, ret, smtputf8, body,
                                                  arrival))

    async def _enqueue(self, mail_from, recipients, message, envid, ret, smtputf8, body, arrival) -> int:
        blob_id = await self._in_thread(self.blobs.put, message)
        now = self.clock()
        entry = QueueEntry(
            0, blob_id, len(message), mail_from,
            [QueuedRecipient(address, tuple(notify), orcpt, changed=now) for address, notify, orcpt in recipients],
            created=now, next_attempt=now, envid=envid, ret=ret, smtputf8=smtputf8, body=body,
            arrival=arrival or now,
        )
        entry = await self.metadata.write(lambda txn: QueueStore.add_txn(txn, entry))
        self.log.info("queued {id} from <{sender}> to {count} recipient(s)", id=entry.id, sender=mail_from,
                      count=len(entry.recipients))
        self.wake()
        return entry.id

    def report(
        self,
        sender: str,
        reports: list[RecipientReport],
        original: bytes,
        *,
        envid: str | None = None,
        ret: str | None = None,
        arrival: float | None = None,
    ) -> defer.Deferred:
        """Queue a DSN to ``sender`` about ``reports`` (none for the null sender)."""
        if not sender or not reports:
            return defer.succeed(None)
        message = build_report(self.hostname, sender, reports, original, envid=envid, ret=ret, arrival=arrival)
        smtputf8, body = _report_flags(sender, message)
        return self.enqueue("", [(sender, ("NEVER",), None)], message, smtputf8=smtputf8, body=body)

    # -- reading (for the CLI and tests) --------------------------------------------------------
    def entries(self) -> list[QueueEntry]:
        return self.metadata.read(QueueStore.list_txn)

    def get(self, entry_id: int) -> QueueEntry | None:
        return self.metadata.read(lambda txn: QueueStore.get_txn(txn, entry_id))

    # -- the service ------------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self.wake()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return defer.DeferredList(tasks, consumeErrors=True)

    def wake(self, delay: float = 0.0) -> None:
        """Run the due entries after ``delay`` seconds (sooner if already scheduled sooner)."""
        if not self.running:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self.reactor.seconds() + delay:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(delay, self._run_due)

    def _run_due(self) -> None:
        self._timer = None
        if not self.running:
            return
        now = self.clock()
        due = self.metadata.read(lambda txn: QueueStore.due_txn(txn, now, BATCH + len(self._in_flight)))
        due = [i for i in due if i not in self._in_flight][:BATCH]
        if due:
            self._track(defer.ensureDeferred(self._deliver_entries(due)))
        self._schedule_next()

    def _schedule_next(self) -> None:
        next_due = self.metadata.read(QueueStore.next_due_txn)
        delay = POLL_INTERVAL
        if next_due is not None:
            delay = min(POLL_INTERVAL, max(0.05, next_due - self.clock()))
        self.wake(delay)

    def _track(self, d: defer.Deferred) -> defer.Deferred:
        self._tasks.add(d)

        def done(result: Any) -> Any:
            self._tasks.discard(d)
            if isinstance(result, defer.Failure) and not result.check(defer.CancelledError):
                self.log.failure("outbound delivery failed", result)
            return None

        return d.addBoth(done)

    # -- delivering -------------------------------------------------------------------------------
    async def _deliver_entries(self, ids: list[int]) -> None:
        works: dict[int, _Work] = {}
        destinations: dict[str, list[tuple[int, list[int]]]] = {}
        for entry_id in ids:
            entry = self.get(entry_id)
            if entry is None:
                continue
            by_domain: dict[str, list[int]] = {}
            for index, recipient in enumerate(entry.recipients):
                if recipient.status == PENDING:
                    domain = recipient.address.rpartition("@")[2].lower()
                    by_domain.setdefault(domain, []).append(index)
            if not by_domain:
                await self._finish(_Work(entry, 0))
                continue
            self._in_flight.add(entry_id)
            works[entry_id] = _Work(entry, len(by_domain))
            for domain, indexes in by_domain.items():
                destinations.setdefault(self._route_key(domain), []).append((entry_id, indexes))
        tasks = [self._semaphore.run(lambda k=key, i=items: defer.ensureDeferred(self._deliver_destination(k, i, works)))
                 for key, items in destinations.items()]
        try:
            await defer.DeferredList(tasks, consumeErrors=True)
        finally:
            for entry_id in works:
                self._in_flight.discard(entry_id)

    def _route_key(self, domain: str) -> str:
        if self.directory is not None and self.directory.is_local_domain(domain):
            return "local:" + domain
        if self.config.relay_host:
            return "relay:"
        return "mx:" + domain

    async def _deliver_destination(self, key: str, items: list[tuple[int, list[int]]], works: dict[int, _Work]) -> None:
        kind, _, domain = key.partition(":")
        try:
            if kind == "local":
                results = await self._deliver_local(items, works)
            else:
                results = await self._deliver_remote(kind, domain, items, works)
        except defer.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one destination's bug must not stall the queue
            self.log.failure("delivery to {destination} failed", destination=key)
            results = {(eid, i): _Outcome("deferred", f"4.3.0 internal error: {e}") for eid, idx in items for i in idx}
        for (entry_id, index), outcome in results.items():
            works[entry_id].outcomes[index] = outcome
        for entry_id, _ in items:
            work = works[entry_id]
            work.outstanding -= 1
            if work.outstanding == 0:
                await self._finish(work)

    def local_stages(self) -> Any:
        """The ``LOCAL_STAGES`` of the server's pipeline as one ``DeliveryPipeline`` (or ``None``)."""
        if self._local_stages is None and self._server_pipeline is not None:
            from mailserve.smtp.pipeline import DeliveryPipeline

            server_pipeline = self._server_pipeline()
            stages = [stage for stage in getattr(server_pipeline, "stages", ()) if stage.name in LOCAL_STAGES]
            self._local_stages = DeliveryPipeline(stages)
        return self._local_stages

    async def _deliver_local(self, items, works) -> dict[tuple[int, int], _Outcome]:
        from mailserve.smtp.pipeline import DeliveryContext, Envelope, MessageRejected, RecipientContext

        results: dict[tuple[int, int], _Outcome] = {}
        for entry_id, indexes in items:
            entry = works[entry_id].entry
            message = await self._in_thread(self.blobs.get, entry.blob_id)
            contexts, positions = [], []
            for index in indexes:
                recipient = entry.recipients[index]
                resolution = self.directory.resolve_recipient(recipient.address)
                if not resolution.accounts:
                    results[(entry_id, index)] = _Outcome("failed", "550 5.1.1 User unknown", status_code="5.1.1")
                    continue
                for account in resolution.accounts:
                    contexts.append(RecipientContext(recipient.address, account, resolution.detail))
                    positions.append(index)
            if not contexts:
                continue
            envelope = Envelope(entry.mail_from, tuple(entry.recipients[i].address for i in indexes), self.hostname,
                                "127.0.0.1", protocol="local", envid=entry.envid, ret=entry.ret)
            context = DeliveryContext(envelope, message, contexts)
            stages = self.local_stages()
            if stages is not None:
                try:
                    await stages.run(context)
                except MessageRejected as rejected:
                    reply = rejected.reply
                    for index in positions:
                        results[(entry_id, index)] = _Outcome("failed" if reply.permanent else "deferred", str(reply),
                                                              self.hostname, status_code=reply.status)
                    continue
            outcomes = await self.local_delivery.deliver(context)
            for index, outcome in zip(positions, outcomes):
                if outcome.failure is None:
                    results.setdefault((entry_id, index), _Outcome("delivered", "250 2.0.0 delivered locally",
                                                                   self.hostname))
                else:
                    failure = outcome.failure
                    results[(entry_id, index)] = _Outcome("failed" if failure.permanent else "deferred",
                                                          str(failure), self.hostname, status_code=failure.status)
        return results

    async def _deliver_remote(self, kind, domain, items, works) -> dict[tuple[int, int], _Outcome]:
        config = self.config
        all_pairs = [(eid, i) for eid, indexes in items for i in indexes]
        if kind == "relay":
            hosts = [MailHost(config.relay_host, (config.relay_host,))]  # an IP; names resolved below
            port = config.relay_port
            tls = config.relay_tls if config.relay_tls != "none" else "none"
            username, password = config.relay_username or None, config.relay_password or None
        else:
            try:
                hosts = await resolve_mail_hosts(self.resolver, domain)
            except NoMailService as e:
                return {p: _Outcome("failed", f"550 {e.status} {e}", status_code=e.status) for p in all_pairs}
            except RouteTemporaryFailure as e:
                return {p: _Outcome("deferred", f"451 4.4.3 {e}", status_code="4.4.3") for p in all_pairs}
            port, tls, username, password = self.port, "opportunistic", None, None
        if kind == "relay" and not _is_ip(config.relay_host):
            addresses = []
            for lookup in (self.resolver.a, self.resolver.aaaa):
                try:
                    addresses.extend(await lookup(config.relay_host))
                except Exception as e:  # noqa: BLE001 - no address at all is the temporary failure below
                    self.log.debug("smarthost lookup failed: {error}", error=e)
            hosts = [MailHost(config.relay_host, tuple(addresses))]
        last_error = "no mail host could be reached"
        for host in hosts:
            for address in host.addresses:
                try:
                    connection = await self._connect(host, address, port, tls, username, password)
                except SMTPClientError as e:
                    last_error = str(e)
                    if e.reply is not None and e.reply.permanent and username:
                        return {p: _Outcome("failed", str(e.reply), host.name, status_code=e.reply.status)
                                for p in all_pairs}
                    continue
                try:
                    return await self._transactions(connection, host.name, items, works)
                finally:
                    await connection.quit()
        return {p: _Outcome("deferred", f"451 4.4.1 {last_error}", status_code="4.4.1") for p in all_pairs}

    async def _connect(self, host: MailHost, address: str, port: int, tls: str, username: str | None,
                       password: str | None) -> Any:
        """One session with ``address``; opportunistic TLS that fails is retried in the clear.

        Postfix's ``smtp_tls_security_level = may`` does the same: a peer whose TLS is broken
        (bad certificate chain, no shared cipher, a middlebox eating the handshake) still gets
        its mail, unencrypted, as it would without STARTTLS (RFC 7435 §4.1, RFC 3207 §4.1).
        """
        try:
            return await connect(self.reactor, address, port, self.hostname, host_name=host.name, tls=tls,
                                 tls_options=self.tls_options, username=username, password=password,
                                 timeout=self.timeout, data_timeout=self.data_timeout)
        except TLSHandshakeFailed as e:
            if tls != "opportunistic":
                raise
            self.log.warn("{host}[{address}]:{port}: {error}; retrying without TLS", host=host.name,
                          address=address, port=port, error=e)
        return await connect(self.reactor, address, port, self.hostname, host_name=host.name, tls="none",
                             tls_options=self.tls_options, username=username, password=password,
                             timeout=self.timeout, data_timeout=self.data_timeout)

    async def _transactions(self, connection, host_name, items, works) -> dict[tuple[int, int], _Outcome]:
        results: dict[tuple[int, int], _Outcome] = {}
        dsn_capable = "DSN" in connection.extensions
        for position, (entry_id, indexes) in enumerate(items):
            entry = works[entry_id].entry
            try:
                recipients = [(entry.recipients[i].address, entry.recipients[i].notify, entry.recipients[i].orcpt)
                              for i in indexes]
                prepared = await self._in_thread(self._prepare, entry, [r[0] for r in recipients],
                                                 connection.extensions)
                if isinstance(prepared, _Outcome):
                    for index in indexes:
                        results[(entry_id, index)] = replace(prepared, remote_mta=host_name)
                    continue
                message, smtputf8, body = prepared
                result = await connection.send(entry.mail_from, recipients, message, envid=entry.envid,
                                               ret=entry.ret, smtputf8=smtputf8, body=body)
            except SMTPClientError as e:
                for eid, idx in items[position:]:
                    for index in idx:
                        results.setdefault((eid, index), _Outcome("deferred", f"451 4.4.2 {e}", host_name,
                                                                  status_code="4.4.2"))
                return results
            for index, rcpt_reply in zip(indexes, result.recipients):
                final = rcpt_reply if not rcpt_reply.ok else (result.data or SMTPReply(451, "4.3.0 no DATA reply"))
                results[(entry_id, index)] = _reply_outcome(final, host_name, relayed=not dsn_capable)
        return results

    def _prepare(self, entry: QueueEntry, recipients: list[str],
                 extensions: dict[str, str]) -> tuple[bytes, bool, str] | _Outcome:
        """The bytes and MAIL parameters for one peer, or why this peer cannot have the message.

        Runs in a thread: it reads the blob and may rewrite a large message.

        * RFC 6531 §3.2: SMTPUTF8 is asked for only when the addresses or header fields need
          it; such a message cannot go to a peer without SMTPUTF8 and bounces with 5.6.7.
        * RFC 6152 §3: 8-bit content goes with BODY=8BITMIME to a peer offering it, and is
          converted to 7 bits for one that does not (``mailserve.smtp.downgrade``), or bounces
          with 5.6.3 when it cannot be.
        * RFC 5321 §4.5.3.1.6: lines over 998 octets are re-encoded for every peer, or, when
          that is impossible and the peer takes 8-bit data, broken as Postfix breaks them.
        """
        message = self.blobs.get(entry.blob_id)
        header_end = message.find(b"\r\n\r\n")
        header = message if header_end < 0 else message[:header_end]
        needs_utf8 = entry.smtputf8 and (
            not entry.mail_from.isascii() or not all(r.isascii() for r in recipients) or has_8bit(header))
        if needs_utf8 and "SMTPUTF8" not in extensions:
            return _Outcome("failed", "553 5.6.7 SMTPUTF8 is required, but was not offered by the remote server",
                            status_code="5.6.7")
        allow_8bit = "8BITMIME" in extensions
        try:
            message = convert_for_peer(message, allow_8bit)
        except ConversionImpossible as e:
            if not allow_8bit and has_8bit(message):
                return _Outcome("failed", f"554 5.6.3 8BITMIME is required, but was not offered by the remote "
                                f"server and the message cannot be converted: {e}", status_code="5.6.3")
            message = break_long_lines(message)
        return message, needs_utf8, "8BITMIME" if has_8bit(message) else "7BIT"

    # -- recording results ---------------------------------------------------------------------------
    async def _finish(self, work: _Work) -> None:
        """Record one entry's attempt and queue the reports it owes, in one transaction."""
        entry = work.entry
        now = self.clock()
        recipients = [replace(r) for r in entry.recipients]
        failed_reports, success_reports, deferred = [], [], []
        errors = []
        for index, outcome in work.outcomes.items():
            recipient = recipients[index]
            recipient.reply = outcome.reply
            recipient.remote_mta = outcome.remote_mta
            recipient.changed = now
            if outcome.status == "delivered":
                recipient.status = DELIVERED
                if "SUCCESS" in recipient.notify and not outcome.passed_on:
                    action = "relayed" if outcome.relayed else "delivered"
                    success_reports.append(self._recipient_report(recipient, action, outcome, now))
            elif outcome.status == "failed":
                recipient.status = FAILED
                if recipient.wants("FAILURE"):
                    failed_reports.append(self._recipient_report(recipient, "failed", outcome, now))
            else:
                deferred.append(recipient)
                errors.append(outcome.reply)
        attempts = entry.attempts + 1
        expired = now - entry.created >= self.config.queue_lifetime
        delayed_reports = []
        delay_notified = entry.delay_notified
        if deferred and expired:
            for recipient in deferred:
                recipient.status = FAILED
                recipient.reply = f"{recipient.reply} (gave up: delivery time expired)"
                if recipient.wants("FAILURE"):
                    outcome = _Outcome("failed", recipient.reply, recipient.remote_mta, status_code="4.4.7")
                    failed_reports.append(self._recipient_report(recipient, "failed", outcome, now))
            deferred = []
        elif (deferred and not delay_notified and self.config.delay_notice_after
              and now - entry.created >= self.config.delay_notice_after):
            delay_notified = True
            until = entry.created + self.config.queue_lifetime
            for recipient in deferred:
                if recipient.wants("DELAY"):
                    outcome = _Outcome("deferred", recipient.reply, recipient.remote_mta,
                                       status_code=_status_of(recipient.reply, "4.0.0"))
                    delayed_reports.append(replace(self._recipient_report(recipient, "delayed", outcome, now),
                                                   will_retry_until=until))
        backoff = min(self.config.retry_initial * (2 ** (attempts - 1)), self.config.retry_max)
        updated = replace(entry, recipients=recipients, attempts=attempts, delay_notified=delay_notified,
                          next_attempt=now + backoff, last_error=errors[0] if errors else "")
        reports = []
        if entry.mail_from:
            original = None
            for group in (failed_reports, delayed_reports, success_reports):
                if group:
                    if original is None:
                        original = await self._in_thread(self.blobs.get, entry.blob_id)
                    reports.append(build_report(self.hostname, entry.mail_from, group, original, envid=entry.envid,
                                                ret=entry.ret, arrival=entry.arrival, now=now))
        report_blobs = []
        for report in reports:
            report_blobs.append((await self._in_thread(self.blobs.put, report), len(report),
                                 _report_flags(entry.mail_from, report)))
        finished = not updated.pending

        def transaction(txn: Any) -> bool:
            current = QueueStore.get_txn(txn, entry.id)
            if current is None:
                return False  # deleted meanwhile (``mailserve queue delete``)
            for blob_id, size, (smtputf8, body) in report_blobs:
                QueueStore.add_txn(txn, QueueEntry(
                    0, blob_id, size, "", [QueuedRecipient(entry.mail_from, ("NEVER",), changed=now)],
                    created=now, next_attempt=now, arrival=now, smtputf8=smtputf8, body=body))
            if finished:
                return QueueStore.remove_txn(txn, current)
            QueueStore.update_txn(txn, current, updated)
            return False

        release = await self.metadata.write(transaction)
        if self.metrics is not None:
            results = {DELIVERED: "delivered", FAILED: "bounced", PENDING: "deferred"}
            for index in work.outcomes:
                self.metrics.deliveries.labels(result=results[recipients[index].status]).inc()
        if release:
            await self._in_thread(self._delete_blob, entry.blob_id)
        if report_blobs:
            self.wake()
        self.log.info("queue {id}: attempt {n}, {left} recipient(s) left", id=entry.id, n=attempts,
                      left=len(updated.pending))

    def _delete_blob(self, blob_id: str) -> None:
        if self.metadata.read(lambda txn: txn.get(keys.blob_refs(blob_id))) is None:
            self.blobs.delete(blob_id)

    def _recipient_report(self, recipient: QueuedRecipient, action: str, outcome: _Outcome, now: float) -> RecipientReport:
        status = outcome.status_code or _status_of(outcome.reply, "2.0.0" if action in ("delivered", "relayed")
                                                   else "5.0.0")
        diagnostic = f"smtp; {outcome.reply}" if outcome.reply and action != "delivered" else None
        return RecipientReport(recipient.address, action, status, diagnostic,
                               remote_mta=outcome.remote_mta or None, original_recipient=recipient.orcpt,
                               last_attempt=now)


def _report_flags(sender: str, report: bytes) -> tuple[bool, str]:
    """SMTPUTF8 and BODY for a report: a UTF-8 sender address or header needs SMTPUTF8 (RFC 6533
    §6), 8-bit content (an internationalized status part or original) needs 8BITMIME."""
    header_end = report.find(b"\r\n\r\n")
    header = report if header_end < 0 else report[:header_end]
    return not sender.isascii() or not header.isascii(), "7BIT" if report.isascii() else "8BITMIME"


def _reply_outcome(reply: SMTPReply, host: str, relayed: bool) -> _Outcome:
    text = str(reply).replace("\n", " ")
    if reply.ok:
        return _Outcome("delivered", text, host, relayed=relayed, status_code=reply.status, passed_on=not relayed)
    if reply.permanent:
        return _Outcome("failed", text, host, status_code=reply.status)
    return _Outcome("deferred", text, host, status_code=reply.status)


def _status_of(reply: str, default: str) -> str:
    words = reply.split()
    if len(words) >= 2:
        parts = words[1].split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return words[1]
    return default


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _opportunistic_tls() -> Any:
    """Opportunistic TLS does not verify (RFC 7435 §1.3): any encryption beats none."""
    from twisted.internet import ssl

    return ssl.CertificateOptions(verify=False)
