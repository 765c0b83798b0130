"""App passwords and API tokens: secrets an account holds besides its password.

Why two kinds
-------------
- An **app password** is what a user gives one mail client (a phone, a laptop) instead of the
  account password, so that the client can be cut off alone (as Gmail, Fastmail and Stalwart do).
  It is accepted wherever the account password is (IMAP, POP3, SMTP AUTH, ManageSieve, HTTP Basic).
- An **API token** is what a script gives the admin REST API (``Authorization: Bearer``,
  RFC 6750 §2.1); an administrator creates and revokes it, and it acts with its account's rights.

Both are generated here with 192 bits from :mod:`secrets`, shown once, and stored only as their
SHA-256.  A salted slow hash (Argon2) protects *human-chosen* passwords against guessing; for a
random 192-bit secret a single SHA-256 is as strong and lets a token be found by its hash in one
key lookup, without knowing its owner (Stalwart and GitHub store tokens the same way).

Records are kept in the metadata store under the directory's keys (``mailserve.core.keys``), so
they are written with the same ``execute`` function as the directory: Deferreds in the server,
plain values in the CLI.

Counting failed authentications
-------------------------------
Every protocol checks passwords through ``Directory.authenticate``, which knows the login and
the client address but not the protocol.  The protocol is carried alongside instead, in the
context variable :data:`authentication_source`: each listener sets its
:class:`AuthenticationSource` while its protocol handles an event (``mailserve.service``), and
Twisted runs coroutines in the context they were started in, so the source is still current when
the check is made.  ``Directory.authenticate`` reports each failure to it, which increments
``mailserve_auth_failures_total{protocol=...}``.  A context variable, unlike a module-level
registry, holds nothing shared: each connection's events see their own listener's source.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from mailserve.core import keys
from mailserve.core.model import pack, unpack
from mailserve.interfaces import IMetadataStore

#: Prefix of every API token, so that a leaked token is recognisable by secret scanners and
#: never mistaken for a password.
API_TOKEN_PREFIX = "mst_"
#: Most app passwords and API tokens one account may hold; a bound on what a compromised
#: session could create.
MAX_CREDENTIALS_PER_ACCOUNT = 100
MAX_LABEL_LENGTH = 100

_LABEL_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_APP_PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"


class CredentialError(Exception):
    """A refused credential operation; ``str()`` says why."""


class CredentialNotFound(CredentialError):
    pass


class TooManyCredentials(CredentialError):
    pass


class InvalidLabel(CredentialError):
    pass


@dataclass(frozen=True)
class AuthenticationSource:
    """Which protocol is authenticating a client, and what counts its failures."""

    protocol: str
    on_failure: Callable[[], Any] | None = None

    @classmethod
    def for_metrics(cls, protocol: str, metrics: Any) -> AuthenticationSource:
        """A source counting into ``metrics.auth_failures`` (``ServerMetrics``; ``None``: not counted)."""
        if metrics is None:
            return cls(protocol)
        return cls(protocol, metrics.auth_failures.labels(protocol=protocol).inc)

    def failed(self) -> None:
        if self.on_failure is not None:
            self.on_failure()


#: The source of the authentication being made now (see "Counting failed authentications").
authentication_source: ContextVar[AuthenticationSource | None] = ContextVar(
    "mailserve_authentication_source", default=None)


def current_authentication_source() -> AuthenticationSource | None:
    """The source to report to; read it when the check starts (callbacks may run elsewhere)."""
    return authentication_source.get()


def report_authentication_failure(source: AuthenticationSource | None) -> None:
    """Count one failed authentication (a wrong password, or an address over its budget)."""
    if source is not None:
        source.failed()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class AppPassword:
    """One app password: what is shown about it after creation (never the secret)."""

    id: int
    account: int
    label: str
    created: int

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class APIToken:
    """One API token; ``expires`` is a Unix time, 0 for a token that does not expire."""

    id: int
    account: int
    label: str
    created: int
    expires: int = 0

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def expired(self, now: float) -> bool:
        return bool(self.expires) and now >= self.expires


def _check_label(label: str) -> str:
    label = label.strip()
    if not _LABEL_RE.match(label):
        raise InvalidLabel(f"a label must be 1 to {MAX_LABEL_LENGTH} printable characters")
    return label


def generate_app_password() -> str:
    """Four groups of six lower-case letters and digits, e.g. ``k3vn8q-...``.

    24 characters from a 33-letter alphabet without look-alikes (``l``, ``1``, ``0``, ``o``) is
    121 bits: typed by hand into a phone, yet far beyond guessing.
    """
    chars = [secrets.choice(_APP_PASSWORD_ALPHABET) for _ in range(24)]
    return "-".join("".join(chars[i:i + 6]) for i in range(0, 24, 6))


def generate_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(24)


class Credentials:
    """App passwords and API tokens of every account, over the metadata store.

    ``execute`` runs a write transaction function: ``metadata.write`` in the server (returns a
    Deferred), ``metadata.write_sync`` in the CLI -- the same convention as ``Directory``.
    """

    def __init__(
        self,
        metadata: IMetadataStore,
        execute: Callable[[Callable], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metadata = metadata
        self._execute = execute or metadata.write_sync
        self._clock = clock

    # -- app passwords ---------------------------------------------------------------------
    def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        def fn(txn) -> list[AppPassword]:
            return [AppPassword(**unpack(v)) for _, v in txn.scan(keys.app_passwords_prefix(account_id))]

        return sorted(self.metadata.read(fn), key=lambda p: p.id)

    def create_app_password(self, account_id: int, label: str) -> Any:
        """Create an app password; fires with ``(AppPassword, secret)`` -- the only time the secret exists."""
        label = _check_label(label)
        secret = generate_app_password()
        digest = _digest(secret)

        def fn(txn) -> tuple[AppPassword, str]:
            existing = list(txn.scan(keys.app_passwords_prefix(account_id)))
            if len(existing) >= MAX_CREDENTIALS_PER_ACCOUNT:
                raise TooManyCredentials(
                    f"an account may hold at most {MAX_CREDENTIALS_PER_ACCOUNT} app passwords; revoke one first")
            record = AppPassword(txn.incr(keys.NEXT_CREDENTIAL), account_id, label, int(self._clock()))
            txn.put(keys.app_password(account_id, digest), pack(asdict(record)))
            return record, secret

        return self._execute(fn)

    def revoke_app_password(self, account_id: int, password_id: int) -> Any:
        def fn(txn) -> AppPassword:
            for key, value in txn.scan(keys.app_passwords_prefix(account_id)):
                record = AppPassword(**unpack(value))
                if record.id == password_id:
                    txn.delete(key)
                    return record
            raise CredentialNotFound(f"no app password {password_id} on this account")

        return self._execute(fn)

    def revoke_all_of(self, account_id: int) -> Any:
        """Remove every app password and token of an account (when the account is removed)."""

        def fn(txn) -> int:
            doomed = [k for k, _ in txn.scan(keys.app_passwords_prefix(account_id))]
            for key, value in txn.scan(keys.API_TOKENS_PREFIX):
                if APIToken(**unpack(value)).account == account_id:
                    doomed.append(key)
            for key in doomed:
                txn.delete(key)
            return len(doomed)

        return self._execute(fn)

    @staticmethod
    def app_password_matches(txn, account_id: int, password: str) -> bool:
        """Inside a read transaction: whether ``password`` is an app password of the account.

        Used by ``Directory.verify_password`` after the account password failed.  A constant-time
        comparison is not needed: the lookup is by a hash of the secret, which reveals nothing
        about the stored values through timing.
        """
        if not password or len(password) > 1024:
            return False
        return txn.get(keys.app_password(account_id, _digest(password))) is not None

    def verify_app_password(self, account_id: int, password: str) -> bool:
        return self.metadata.read(lambda txn: self.app_password_matches(txn, account_id, password))

    # -- API tokens --------------------------------------------------------------------------
    def list_api_tokens(self, account_id: int | None = None) -> list[APIToken]:
        def fn(txn) -> list[APIToken]:
            tokens = [APIToken(**unpack(v)) for _, v in txn.scan(keys.API_TOKENS_PREFIX)]
            return [t for t in tokens if account_id is None or t.account == account_id]

        return sorted(self.metadata.read(fn), key=lambda t: t.id)

    def create_api_token(self, account_id: int, label: str, lifetime: float = 0) -> Any:
        """Create a token acting as ``account_id``; fires with ``(APIToken, secret)``.

        ``lifetime`` in seconds, 0 for no expiry.
        """
        label = _check_label(label)
        if lifetime < 0:
            raise CredentialError("a token lifetime must not be negative")
        secret = generate_api_token()
        digest = _digest(secret)
        now = int(self._clock())

        def fn(txn) -> tuple[APIToken, str]:
            mine = [v for _, v in txn.scan(keys.API_TOKENS_PREFIX) if APIToken(**unpack(v)).account == account_id]
            if len(mine) >= MAX_CREDENTIALS_PER_ACCOUNT:
                raise TooManyCredentials(
                    f"an account may hold at most {MAX_CREDENTIALS_PER_ACCOUNT} API tokens; revoke one first")
            record = APIToken(txn.incr(keys.NEXT_CREDENTIAL), account_id, label, now,
                              now + int(lifetime) if lifetime else 0)
            txn.put(keys.api_token(digest), pack(asdict(record)))
            return record, secret

        return self._execute(fn)

    def revoke_api_token(self, token_id: int) -> Any:
        def fn(txn) -> APIToken:
            for key, value in txn.scan(keys.API_TOKENS_PREFIX):
                record = APIToken(**unpack(value))
                if record.id == token_id:
                    txn.delete(key)
                    return record
            raise CredentialNotFound(f"no API token {token_id}")

        return self._execute(fn)

    def find_api_token(self, secret: str) -> APIToken | None:
        """The token a bearer secret stands for, if it exists and has not expired (synchronous)."""
        if not secret.startswith(API_TOKEN_PREFIX) or len(secret) > 200:
            return None
        digest = _digest(secret)
        data = self.metadata.read(lambda txn: txn.get(keys.api_token(digest)))
        if data is None:
            return None
        token = APIToken(**unpack(data))
        if token.expired(self._clock()):
            return None
        return token
