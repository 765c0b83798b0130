"""Prometheus metrics of one server, in its own ``CollectorRegistry``.

Why a registry per server: ``prometheus_client``'s default registry is process-global, and
several servers may run in one process (tests do; an embedding application may).  So each
``MailServer`` owns one ``ServerMetrics`` (``server.metrics``) and ``/metrics`` exposes only it.

How other parts count
---------------------
Connections (accepted, refused, active) are counted for every protocol by the listener
(``mailserve.listeners.ListenerService``), and failed authentications by the directory, labelled
with the listener's protocol (``mailserve.directory.credentials.AuthenticationSource``); the
message counters are incremented by the parts that handle messages.

Every protocol gets the object with ``metrics = getattr(server, "metrics", None)`` (``None`` in a
build without it) and increments the counters below, e.g.::

    if metrics is not None:
        metrics.messages_received.labels(protocol="smtp").inc()

=========================================  =========  =======================================
metric (attribute)                          labels     meaning
=========================================  =========  =======================================
``mailserve_messages_received_total``       protocol   messages accepted (SMTP 250 after DATA,
(``messages_received``)                                IMAP APPEND, JMAP import)
``mailserve_messages_delivered_total``      --         local deliveries committed to a mailbox
(``messages_delivered``)
``mailserve_messages_rejected_total``       reason     messages refused (``policy``, ``spam``,
(``messages_rejected``)                                ``quota``, ``size``, ``recipient``, ...)
``mailserve_messages_queued_total``         --         messages put on the outbound queue
(``messages_queued``)
``mailserve_deliveries_total``              result     outbound attempts: ``delivered``,
(``deliveries``)                                       ``deferred``, ``bounced``
``mailserve_connections_total``             protocol   connections accepted
(``connections``)
``mailserve_connections_refused_total``     protocol   connections refused at
(``connections_refused``)                              ``server.max_connections[_per_ip]``
``mailserve_connections_active``            protocol   connections open now (gauge: ``inc`` on
(``connections_active``)                               connect, ``dec`` on close)
``mailserve_auth_failures_total``           protocol   failed authentications
(``auth_failures``)
``mailserve_http_request_duration_seconds`` handler,   HTTP request latency (histogram)
(``http_request_duration``)                 method
``mailserve_queue_size``                    --         messages waiting in the outbound queue
``mailserve_store_size_bytes``              store      metadata file, mail stored, search index
``mailserve_accounts`` / ``_domains``       --         directory sizes
=========================================  =========  =======================================

The last four are read at scrape time by a collector, so nobody has to keep them up to date.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.logger import Logger

from mailserve.config import PROTOCOLS

#: The content type of the Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Latency buckets (seconds) for HTTP: from a cached health check to a large JMAP upload.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _directory_size(path: str, max_entries: int = 10_000) -> int:
    """Bytes in a directory tree, reading at most ``max_entries`` entries (the index is small)."""
    total = 0
    seen = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            seen += 1
            if seen > max_entries:
                return total
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class ServerStateCollector(Collector):
    """Gauges computed when scraped: queue size, store sizes, directory counts.

    Called from ``/metrics`` in a thread (``deferToThread``), never on the reactor: walking the
    index directory and scanning the directory may take longer than a reactor turn should.
    """

    log = Logger()

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily]:
        server = self.server
        if server is None or not getattr(server, "running", False):
            return
        from mailserve.core import keys

        queue_size = GaugeMetricFamily("mailserve_queue_size", "Messages waiting in the outbound queue.")
        size = _queue_size(server)
        if size is not None:
            queue_size.add_metric([], size)
            yield queue_size

        stores = GaugeMetricFamily("mailserve_store_size_bytes", "Size of each store.", labels=["store"])
        storage = server.config.storage
        metadata_file = os.path.join(storage.lmdb.path, "data.mdb")
        try:
            stores.add_metric(["metadata"], os.stat(metadata_file).st_size)
        except OSError:
            pass

        def mail_bytes(txn) -> tuple[int, int, int]:
            used = accounts = 0
            for key, _ in txn.scan(keys.ACCOUNTS_PREFIX):
                account_id = keys.U32.unpack_from(key, 2)[0]
                used += txn.counter(keys.counter(account_id, keys.QUOTA_BYTES_USED))
                accounts += 1
            domains = sum(1 for _ in txn.scan(keys.DOMAINS_PREFIX))
            return used, accounts, domains

        try:
            used, accounts, domains = server.metadata.read(mail_bytes)
        except Exception:  # noqa: BLE001 - a closing store must not break the scrape
            self.log.debug("metadata store not readable for metrics")
            return
        stores.add_metric(["mail"], used)
        stores.add_metric(["search_index"], _directory_size(storage.index.path))
        yield stores
        yield GaugeMetricFamily("mailserve_accounts", "Accounts and groups in the directory.", value=accounts)
        yield GaugeMetricFamily("mailserve_domains", "Domains served.", value=domains)


def _queue_size(server: Any) -> int | None:
    """Messages in the outbound queue: its records in the metadata store (``None``: no queue).

    Counted from the store rather than asked of the running queue, so the figure includes what
    ``mailserve queue`` or another node changed; the collector runs in a thread, off the reactor.
    """
    from mailserve.core import keys

    try:
        queue = getattr(server, "outbound_queue", None)
    except Exception:  # noqa: BLE001 - not available in this build
        queue = None
    if queue is None:
        return None
    try:
        return server.metadata.read(lambda txn: sum(1 for _ in txn.scan(keys.QUEUE_ENTRIES_PREFIX)))
    except Exception:  # noqa: BLE001 - a closing store must not break the scrape
        return None


class ServerMetrics:
    """The counters every part of one server increments, in one registry of its own."""

    def __init__(self, server: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_received = Counter(
            "mailserve_messages_received", "Messages accepted.", ["protocol"], registry=r)
        self.messages_delivered = Counter(
            "mailserve_messages_delivered", "Local deliveries committed to a mailbox.", registry=r)
        self.messages_rejected = Counter(
            "mailserve_messages_rejected", "Messages refused.", ["reason"], registry=r)
        self.messages_queued = Counter(
            "mailserve_messages_queued", "Messages put on the outbound queue.", registry=r)
        self.deliveries = Counter(
            "mailserve_deliveries", "Outbound delivery attempts by result.", ["result"], registry=r)
        self.connections = Counter(
            "mailserve_connections", "Connections accepted.", ["protocol"], registry=r)
        self.connections_refused = Counter(
            "mailserve_connections_refused", "Connections refused at the connection limits.", ["protocol"],
            registry=r)
        self.connections_active = Gauge(
            "mailserve_connections_active", "Connections open now.", ["protocol"], registry=r)
        self.auth_failures = Counter(
            "mailserve_auth_failures", "Failed authentications.", ["protocol"], registry=r)
        self.http_request_duration = Histogram(
            "mailserve_http_request_duration_seconds", "HTTP request latency.", ["handler", "method"],
            buckets=HTTP_BUCKETS, registry=r)
        # Every protocol's series exists from the start at 0, so rates and alerts work before the
        # first event (Prometheus best practice: avoid missing metrics).
        for protocol in PROTOCOLS:
            for family in (self.messages_received, self.connections, self.connections_refused,
                           self.connections_active, self.auth_failures):
                family.labels(protocol=protocol)
        for result in ("delivered", "deferred", "bounced"):
            self.deliveries.labels(result=result)
        self.state = ServerStateCollector(server)
        r.register(self.state)

    def bind(self, server: Any) -> None:
        """Attach the server whose state the scrape-time gauges read (if built without one)."""
        self.state.server = server

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric; blocking (run it in a thread)."""
        return generate_latest(self.registry)
