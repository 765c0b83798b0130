"""The web admin (``/admin``): static files shipped in the package, plus login and logout.

Everything the browser runs is in ``static/`` inside the package -- no CDN, no build step -- and
the pages are served with a Content-Security-Policy allowing only this origin's scripts and
styles, so an injected ``<script>`` cannot run.  The page talks to the REST API (``/api``) with the
session cookie set by ``POST /admin/login`` and the CSRF token ``/api/me`` returns.

Login is throttled by the directory's per-address failure count (as for every protocol) and each
failure is delayed by ``auth.failure_delay``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from twisted.web.server import Request

from mailserve.web.auth import SESSION_COOKIE, CSRFRejected, Throttled, Unauthenticated
from mailserve.web.http import error_body, header, json_body

CONTENT_SECURITY_POLICY = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                ".css": b"text/css; charset=utf-8", ".svg": b"image/svg+xml"}
MAX_LOGIN_BODY = 8192


def _load_static() -> dict[str, bytes]:
    """Read the shipped files once (they are small) so serving never touches the disk."""
    files = {}
    folder = resources.files(__package__).joinpath("static")
    for entry in folder.iterdir():
        if entry.is_file() and any(entry.name.endswith(ext) for ext in STATIC_TYPES):
            files[entry.name] = entry.read_bytes()
    return files


class WebAdmin:
    """Serves ``/admin/...`` for one listener."""

    def __init__(self, auth: Any) -> None:
        self.auth = auth
        self.files = _load_static()

    def render(self, request: Request) -> Any:
        path = request.path.decode("ascii", "replace")
        rest = path[len("/admin"):].lstrip("/")
        if rest == "login":
            if request.method != b"POST":
                request.setHeader(b"Allow", b"POST")
                return error_body(request, 405, "method_not_allowed", "use POST")
            return self.login(request)
        if rest == "logout":
            if request.method != b"POST":
                request.setHeader(b"Allow", b"POST")
                return error_body(request, 405, "method_not_allowed", "use POST")
            return self.logout(request)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return error_body(request, 405, "method_not_allowed", "use GET")
        if path == "/admin":
            request.redirect(b"/admin/")
            return b""
        name = rest or "index.html"
        body = self.files.get(name)
        if body is None or "/" in name:
            return error_body(request, 404, "not_found", "no such file")
        request.setHeader(b"Content-Type", STATIC_TYPES[name[name.rindex("."):]])
        request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY)
        request.setHeader(b"Cache-Control", b"no-cache")
        return body

    async def login(self, request: Request) -> bytes:
        content_type = header(request, b"content-type").split(";")[0].strip().lower()
        if content_type != "application/json":
            # A cross-site form cannot send JSON without a CORS preflight we never grant.
            return error_body(request, 415, "unsupported_media_type", "log in with a JSON body")
        data = request.content.read(MAX_LOGIN_BODY + 1) if request.content is not None else b""
        try:
            body = json.loads(data.decode("utf-8")) if len(data) <= MAX_LOGIN_BODY else None
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("login"), str) \
                or not isinstance(body.get("password"), str) or set(body) - {"login", "password"}:
            return error_body(request, 400, "invalid_request", "send {\"login\": ..., \"password\": ...}")
        if not self.auth.may_send_password(request):
            return error_body(request, 403, "forbidden", "passwords are accepted only over TLS; use https")
        try:
            account = await self.auth.check_password(request, body["login"][:255], body["password"][:1024])
        except Throttled as e:
            request.setHeader(b"Retry-After", b"900")
            return error_body(request, 429, "throttled", str(e))
        except Unauthenticated:
            request.setHeader(b"WWW-Authenticate", b'Session realm="mailserve"')
            return error_body(request, 401, "unauthenticated", "wrong login or password")
        session = self.auth.start_session(request, account)
        return json_body(request, 200, {"csrf_token": session.csrf, "account": account.name,
                                        "is_admin": account.role == "admin"})

    def logout(self, request: Request) -> bytes:
        cookie = request.getCookie(SESSION_COOKIE)
        if cookie:
            try:
                self.auth.session_principal(request, cookie.decode("ascii", "replace"))
            except CSRFRejected as e:
                return error_body(request, 403, "forbidden", str(e))
            except Unauthenticated:
                pass
            self.auth.sessions.drop(cookie.decode("ascii", "replace"))
        self.auth.set_cookie(request, "", self.auth.secure(request), max_age=0)
        return json_body(request, 200, {"logged_out": True})
