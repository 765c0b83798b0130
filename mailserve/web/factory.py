"""``build(server, listener)``: the HTTP listener's twisted.web site (``listeners.PROTOCOLS["http"]``).

Everything built here belongs to this one listener -- its sessions, its recent-events buffer, its
routing table -- so several servers (and several HTTP listeners) live side by side in one process.
The recent-events observer is attached to twisted.logger's global publisher (the only place log
events flow through) when the site starts and removed when it stops.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, globalLogPublisher

from mailserve.admin.events import RecentEvents
from mailserve.admin.service import AdminService
from mailserve.web.admin.api import AdminAPI
from mailserve.web.auth import Authenticator
from mailserve.web.http import MailserveSite
from mailserve.web.metrics import ServerMetrics
from mailserve.web.root import WebRoot, mount_extensions
from mailserve.web.ui import WebAdmin

log = Logger()


def has_outbound_queue(server: Any) -> bool:
    """Whether this server has an outbound queue (the queue endpoints are published only then)."""
    try:
        return getattr(server, "outbound_queue", None) is not None
    except Exception:  # noqa: BLE001 - a part that cannot be built is not there
        log.debug("the outbound queue is not available")
        return False


class WebSite(MailserveSite):
    """The site of one HTTP listener; it owns the recent-events observer while it listens."""

    def __init__(self, root: WebRoot, events: RecentEvents, max_request_size: int) -> None:
        super().__init__(root.resource(), max_request_size=max_request_size)
        self.root = root
        self.events = events

    def startFactory(self) -> None:
        super().startFactory()
        globalLogPublisher.addObserver(self.events)

    def stopFactory(self) -> None:
        globalLogPublisher.removeObserver(self.events)
        super().stopFactory()


def build(server: Any, listener: Any) -> WebSite:
    """The protocol factory of an ``http`` listener."""
    metrics = getattr(server, "metrics", None)
    if metrics is None:
        # A server assembled without ServerMetrics still gets HTTP latency on /metrics.
        metrics = ServerMetrics(server)
    # One service per server, shared by every HTTP listener: a live-settings change made through
    # one listener's API (which replaces the service's config) is then seen by all of them.
    admin = server.shared("web.admin_service", lambda: AdminService.for_server(server))
    auth = Authenticator(server, listener, admin)
    events = RecentEvents()
    api = AdminAPI(server, admin, auth, events, with_queue=has_outbound_queue(server))
    root = WebRoot(server, api, WebAdmin(auth), metrics)
    mounted = mount_extensions(root, server)
    if mounted:
        log.info("HTTP listener {listener} mounts {mounted}", listener=listener.id, mounted=", ".join(mounted))
    return WebSite(root, events, max_request_size=server.config.http.max_request_size)
