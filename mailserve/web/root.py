"""The Klein root of one HTTP listener: every path the server answers, and where JMAP and DAV mount.

One listener (8080 in development, 443 in the packaged config) serves everything, as Stalwart
does, so the root is a small routing table:

===============================================  =====================================================
``/health``, ``/health/ready``                   liveness and readiness (:mod:`mailserve.web.health`)
``/metrics``                                     Prometheus exposition (:mod:`mailserve.web.metrics`)
``/api/...``                                     admin REST API (:mod:`mailserve.web.admin.api`)
``/admin/...``                                   web admin (:mod:`mailserve.web.ui`)
``/jmap``, ``/.well-known/jmap``                 JMAP (RFC 8620 §2.2), when mounted
``/dav``, ``/.well-known/caldav|carddav``        CalDAV/CardDAV (RFC 6764 §5), when mounted
===============================================  =====================================================

JMAP and DAV are built by their own packages as twisted.web resources and attached with
:meth:`WebRoot.mount` (from their ``mount(root, server)`` hook, see :func:`mount_extensions`);
until then those paths answer ``404`` with a JSON error rather than the web admin.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request

from mailserve.web import health
from mailserve.web.http import add_security_headers, error_body, json_body
from mailserve.web.metrics import CONTENT_TYPE

#: Mount points for sub-applications, and the path segments that lead to each.
MOUNT_POINTS: dict[str, tuple[str, ...]] = {
    "jmap": ("jmap",),
    "well-known-jmap": (".well-known", "jmap"),
    "dav": ("dav",),
    "well-known-caldav": (".well-known", "caldav"),
    "well-known-carddav": (".well-known", "carddav"),
}

#: Modules that may provide ``mount(root, server)`` to attach themselves (absent ones are skipped).
EXTENSIONS = ("mailserve.web.jmap", "mailserve.web.dav")


class WebRoot:
    """Routes one listener's requests; per-listener state only (no module-level state)."""

    app = Klein()
    log = Logger()

    def __init__(self, server: Any, api: Any, ui: Any, metrics: Any) -> None:
        self.server = server
        self.api = api
        self.ui = ui
        self.metrics = metrics
        self._mounts: dict[str, IResource] = {}

    # -- mounting ------------------------------------------------------------------------------
    def mount(self, name: str, resource: IResource) -> None:
        """Serve ``resource`` under the mount point ``name`` (one of :data:`MOUNT_POINTS`)."""
        if name not in MOUNT_POINTS:
            raise ValueError(f"unknown mount point {name!r}; one of {', '.join(MOUNT_POINTS)}")
        if not IResource.providedBy(resource):
            raise TypeError("a mounted application must provide twisted.web.resource.IResource")
        self._mounts[name] = resource

    def mounted(self, name: str) -> IResource | None:
        return self._mounts.get(name)

    def resource(self) -> IResource:
        return self.app.resource()

    # -- instrumentation -------------------------------------------------------------------------
    def _observe(self, request: Request, handler: str) -> None:
        add_security_headers(request)
        if self.metrics is None:
            return
        started = time.perf_counter()
        method = request.method.decode("ascii", "replace") if request.method in (
            b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS") else "other"
        histogram = self.metrics.http_request_duration.labels(handler=handler, method=method)

        def done(_: Any) -> None:
            histogram.observe(time.perf_counter() - started)

        request.notifyFinish().addBoth(done)

    # -- routes -------------------------------------------------------------------------------------
    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request: Request) -> bytes:
        self._observe(request, "admin")
        request.redirect(b"/admin/")
        return b""

    @app.route("/health", methods=["GET", "HEAD"])
    def liveness(self, request: Request) -> bytes:
        self._observe(request, "health")
        status, body = health.liveness()
        return json_body(request, status, body)

    @app.route("/health/ready", methods=["GET", "HEAD"])
    def readiness(self, request: Request) -> bytes:
        self._observe(request, "health")
        status, body = health.readiness(self.server)
        return json_body(request, status, body)

    @app.route("/metrics", methods=["GET", "HEAD"])
    async def scrape(self, request: Request) -> bytes:
        self._observe(request, "metrics")
        if self.metrics is None:
            return error_body(request, 503, "unavailable", "metrics are not enabled in this server")
        text = await deferToThread(self.metrics.exposition)
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return text

    @app.route("/api", branch=True)
    async def api_branch(self, request: Request) -> bytes:
        self._observe(request, "api")
        return await self.api.render(request)

    @app.route("/admin/", branch=True)
    @app.route("/admin", branch=True)
    def admin_branch(self, request: Request) -> Any:
        self._observe(request, "admin")
        return self.ui.render(request)

    def _mounted_or_missing(self, request: Request, name: str, handler: str) -> Any:
        self._observe(request, handler)
        resource = self._mounts.get(name)
        if resource is None:
            return error_body(request, 404, "not_found", f"{handler.upper()} is not available on this server")
        return resource

    @app.route("/jmap", branch=True)
    def jmap(self, request: Request) -> Any:
        return self._mounted_or_missing(request, "jmap", "jmap")

    @app.route("/.well-known/jmap", branch=True)
    def well_known_jmap(self, request: Request) -> Any:
        return self._mounted_or_missing(request, "well-known-jmap", "jmap")

    @app.route("/dav", branch=True)
    def dav(self, request: Request) -> Any:
        return self._mounted_or_missing(request, "dav", "dav")

    @app.route("/.well-known/caldav", branch=True)
    def well_known_caldav(self, request: Request) -> Any:
        return self._mounted_or_missing(request, "well-known-caldav", "dav")

    @app.route("/.well-known/carddav", branch=True)
    def well_known_carddav(self, request: Request) -> Any:
        return self._mounted_or_missing(request, "well-known-carddav", "dav")

    @app.handle_errors
    def unhandled(self, request: Request, failure: Any) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if failure.check(NotFound):
            return error_body(request, 404, "not_found", "no such resource")
        if failure.check(MethodNotAllowed):
            return error_body(request, 405, "method_not_allowed", "method not allowed here")
        self.log.failure("HTTP request {path} failed", failure, path=request.path)
        return error_body(request, 500, "internal_error", "internal error; see the server log")


def mount_extensions(root: WebRoot, server: Any) -> list[str]:
    """Let JMAP and DAV attach themselves: each extension module's ``mount(root, server)`` is called."""
    mounted = []
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue
            raise
        hook = getattr(module, "mount", None)
        if hook is not None:
            hook(root, server)
            mounted.append(name)
    return mounted
