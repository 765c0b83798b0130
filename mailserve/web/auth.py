"""Who is asking: HTTP Basic (RFC 7617), bearer API tokens (RFC 6750) and web admin sessions.

Rules, and where they come from
-------------------------------
- Basic credentials cross the wire in clear, so they are accepted only on a secure channel: TLS
  (here or at a trusted proxy), loopback (Dovecot counts connections from the same host as
  secured, ``disable_plaintext_auth``), or a listener with ``allow_plaintext_auth = true``.
- A password check costs an Argon2 hash (tens of ms, in a thread).  A client sending Basic on
  every request would pay it each time, so a successful check is remembered for
  :data:`VERIFIED_CACHE_SECONDS` under a SHA-256 of the credentials (never the password).  Any
  password or account change through the API clears the cache.
- Failures are throttled per client address by the directory (``AuthThrottle``), delayed by
  ``auth.failure_delay`` and counted in ``mailserve_auth_failures_total{protocol="http"}``.
- Web sessions are random 256-bit ids in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure``
  on TLS), held in memory by the listener (a restart logs everyone out), bounded in number and
  lifetime (``http.session_lifetime``).  Every state-changing request with a session cookie must
  carry the session's CSRF token in ``X-CSRF-Token`` (OWASP synchroniser token pattern).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.server import Request

from mailserve.directory.credentials import AuthenticationSource, authentication_source
from mailserve.web.http import client_ip, header, is_loopback, is_secure

SESSION_COOKIE = b"mailserve_session"
CSRF_HEADER = b"x-csrf-token"
VERIFIED_CACHE_SECONDS = 60.0
MAX_SESSIONS = 10_000
MAX_VERIFIED = 1_000
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


class Unauthenticated(Exception):
    """No usable credentials (401); ``str()`` says why."""


class Throttled(Exception):
    """Too many failures from this address (429)."""


class InsecureChannel(Exception):
    """Credentials refused because they would cross the network in clear (403)."""


class CSRFRejected(Exception):
    """A session request changing state without the right CSRF token (403)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the account and how it proved it."""

    account_id: int
    name: str
    is_admin: bool
    method: str  # "basic", "token", "session"
    session: Session | None = None


@dataclass
class Session:
    id: str
    account_id: int
    csrf: str
    expires: float
    secure: bool


class SessionStore:
    """The web admin's sessions on one listener, bounded in number (oldest dropped first)."""

    def __init__(self, lifetime: Callable[[], float], clock: Callable[[], float] = time.time) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lifetime = lifetime
        self._clock = clock

    def create(self, account_id: int, secure: bool) -> Session:
        session = Session(secrets.token_urlsafe(32), account_id, secrets.token_urlsafe(32),
                          self._clock() + self._lifetime(), secure)
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def drop_account(self, account_id: int) -> None:
        for sid in [s.id for s in self._sessions.values() if s.account_id == account_id]:
            del self._sessions[sid]


class Authenticator:
    """Turns a request's credentials into a :class:`Principal` for one HTTP listener."""

    log = Logger()

    def __init__(self, server: Any, listener: Any, admin: Any, clock: Callable[[], float] = time.time) -> None:
        self.server = server
        self.listener = listener
        self.admin = admin
        self._clock = clock
        self.sessions = SessionStore(lambda: server.config.http.session_lifetime, clock)
        self._verified: OrderedDict[bytes, tuple[int, float]] = OrderedDict()
        #: Failures of this listener count as ``mailserve_auth_failures_total{protocol="http"}``.
        self.source = AuthenticationSource.for_metrics("http", getattr(server, "metrics", None))

    # -- helpers ----------------------------------------------------------------------------
    def client_ip(self, request: Request) -> str:
        return client_ip(request, self.server.config.http.trusted_proxies)

    def secure(self, request: Request) -> bool:
        return is_secure(request, self.server.config.http.trusted_proxies)

    def may_send_password(self, request: Request) -> bool:
        return (self.secure(request) or is_loopback(self.client_ip(request))
                or self.listener.allow_plaintext_auth)

    def forget_verified(self) -> None:
        """Drop remembered Basic checks (after any password or account change)."""
        self._verified.clear()

    def _principal(self, account: Any, method: str, session: Session | None = None) -> Principal:
        return Principal(account.id, account.name, account.role == "admin", method, session)

    async def _failed(self, request: Request, why: str, counted: bool = False) -> None:
        """Log, count (unless the directory counted it already) and slow down a failure."""
        if not counted:
            self.source.failed()
        self.log.info("HTTP authentication failed from {ip}: {why}", ip=self.client_ip(request), why=why)
        delay = self.server.config.auth.failure_delay
        if delay:
            await deferLater(self.server.reactor, delay, lambda: None)

    # -- password check (shared by Basic and the login form) -----------------------------------
    async def check_password(self, request: Request, login: str, password: str) -> Any:
        """The Account for ``login``/``password`` (or an app password), else raise.

        The directory checks both and counts a failure under ``protocol="http"``: the source is
        set here for the call, whatever context the request is handled in.
        """
        from mailserve.directory.directory import AuthenticationFailed, TooManyFailures

        ip = self.client_ip(request)
        token = authentication_source.set(self.source)
        try:
            checking = self.server.directory.authenticate(login, password, ip)
        finally:
            authentication_source.reset(token)
        try:
            return await checking
        except TooManyFailures:
            await self._failed(request, "throttled", counted=True)
            raise Throttled("too many failed logins from this address; try again later") from None
        except AuthenticationFailed:
            await self._failed(request, "wrong credentials", counted=True)
            raise Unauthenticated("invalid credentials") from None

    # -- the three ways in ------------------------------------------------------------------------
    async def authenticate(self, request: Request) -> Principal | None:
        """The caller, ``None`` for an anonymous request; raises when credentials are bad."""
        authorization = header(request, b"authorization")
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "basic":
                return await self._basic(request, value.strip())
            if scheme == "bearer":
                return await self._bearer(request, value.strip())
            raise Unauthenticated(f"unsupported authorization scheme {scheme[:20]!r}; use Basic or Bearer")
        cookie = request.getCookie(SESSION_COOKIE)
        if cookie:
            return self.session_principal(request, cookie.decode("ascii", "replace"))
        return None

    async def _basic(self, request: Request, value: str) -> Principal:
        if not self.may_send_password(request):
            raise InsecureChannel("passwords are accepted only over TLS; use https")
        if len(value) > 4096:
            raise Unauthenticated("credentials too long")
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials (RFC 7617 §2)") from None
        login, colon, password = decoded.partition(":")
        if not colon or not login:
            raise Unauthenticated("malformed Basic credentials (RFC 7617 §2)")
        fingerprint = hashlib.sha256(decoded.encode("utf-8")).digest()
        remembered = self._verified.get(fingerprint)
        if remembered is not None and remembered[1] > self._clock():
            try:
                account = self.server.directory.get_account_by_id(remembered[0])
            except Exception:  # noqa: BLE001 - the account went away: check afresh
                account = None
            if account is not None and account.enabled:
                return self._principal(account, "basic")
        account = await self.check_password(request, login, password)
        self._verified[fingerprint] = (account.id, self._clock() + VERIFIED_CACHE_SECONDS)
        while len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        return self._principal(account, "basic")

    async def _bearer(self, request: Request, value: str) -> Principal:
        token = self.admin.credentials.find_api_token(value)
        account = None
        if token is not None:
            try:
                account = self.server.directory.get_account_by_id(token.account)
            except Exception:  # noqa: BLE001 - a token of a removed account is no token
                account = None
        if account is None or not account.enabled:
            await self._failed(request, "unknown or expired API token")
            raise Unauthenticated("invalid or expired API token")
        return self._principal(account, "token")

    def session_principal(self, request: Request, session_id: str) -> Principal:
        session = self.sessions.get(session_id)
        if session is None:
            raise Unauthenticated("the session has expired; log in again")
        try:
            account = self.server.directory.get_account_by_id(session.account_id)
        except Exception:  # noqa: BLE001
            account = None
        if account is None or not account.enabled:
            self.sessions.drop(session_id)
            raise Unauthenticated("the account of this session is gone or disabled")
        if request.method not in SAFE_METHODS:
            sent = header(request, CSRF_HEADER).encode("latin-1")
            if not hmac.compare_digest(sent, session.csrf.encode()):
                raise CSRFRejected("missing or wrong X-CSRF-Token for this session")
        return self._principal(account, "session", session)

    def start_session(self, request: Request, account: Any) -> Session:
        secure = self.secure(request)
        session = self.sessions.create(account.id, secure)
        self.set_cookie(request, session.id, secure, max_age=int(self.server.config.http.session_lifetime))
        return session

    def set_cookie(self, request: Request, value: str, secure: bool, max_age: int) -> None:
        """The session cookie: HttpOnly, SameSite=Strict, Secure on TLS (RFC 6265 §4.1.2; RFC 6265bis)."""
        request.addCookie(SESSION_COOKIE, value.encode("ascii"), path=b"/", max_age=str(max_age).encode(),
                          httpOnly=True, secure=secure, sameSite="strict")
