"""The administrative operations: one implementation each, shared by the REST API and the CLI.

The directory already implements every domain, account, alias and group change
(``mailserve.directory.directory``); this layer adds what an administrator needs around them --
validation of inputs before anything is written, password hashing off the reactor, the DNS
records a domain must publish, DKIM keys, app passwords and API tokens, quotas, server status --
and maps every refusal to an :class:`~mailserve.admin.errors.AdminError`.

It runs in two modes, chosen by what it is built from (the same convention as ``Directory``):

- in the server (:meth:`AdminService.for_server`), writes go through ``IMetadataStore.write`` and
  blocking work (Argon2, RSA key generation) through ``deferToThread``: methods return Deferreds;
- in the CLI (:meth:`AdminService.for_stores`), writes are synchronous and methods return values.

Callers that must handle both wrap the result with ``twisted.internet.defer.maybeDeferred``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from mailserve.admin.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidScript,
    NotFound,
    TooLarge,
    Unavailable,
    classify,
)
from mailserve.core import keys
from mailserve.directory.credentials import Credentials
from mailserve.mailauth.keystore import SELECTOR, DKIMKey, DKIMKeyStore, make_key
from mailserve.sieve.scripts import SieveScripts, check_script_name

#: RFC 4954 puts no bound on passwords, but a megabyte-long one would only waste Argon2 time.
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
#: RFC 6376 §3.1: a selector is a dot-separated sequence of DNS labels (sub-domain syntax).
DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


def _then(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` now (CLI mode) or when the Deferred fires (server mode)."""
    if isinstance(value, Deferred):
        return value.addCallback(fn)
    return fn(value)


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Translate lower-layer refusals, raised now or later in a Deferred, into AdminErrors."""

    def translate(error: BaseException) -> BaseException:
        mapped = classify(error)
        return mapped if mapped is not None else error

    def errback(failure):
        mapped = classify(failure.value)
        if mapped is not None and mapped is not failure.value:
            raise mapped
        return failure

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            mapped = translate(error)
            if mapped is error:
                raise
            raise mapped from None
        if isinstance(result, Deferred):
            result.addErrback(errback)
        return result

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def check_password(password: Any, field: str = "password") -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH):
        raise InvalidRequest(
            f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters", field=field)
    if "\x00" in password:
        raise InvalidRequest("a password must not contain NUL characters", field=field)
    return password


@dataclass(frozen=True)
class DNSRecord:
    name: str
    type: str
    value: str
    purpose: str

    def public(self) -> dict[str, Any]:
        return asdict(self)


def account_view(account: Any, quota: Any | None = None) -> dict[str, Any]:
    """An account as the API and ``--json`` show it: never the password hash."""
    view = account.public()
    if quota is not None:
        view["quota"] = asdict(quota)
    return view


class AdminService:
    """Every administrative operation over one server's (or one data directory's) stores."""

    def __init__(
        self,
        directory: Any,
        core: Any,
        metadata: Any,
        config: Any,
        *,
        execute: Callable[[Callable], Any],
        blocking: Callable[..., Any],
        server: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.core = core
        self.metadata = metadata
        self._config = config
        self.credentials = Credentials(metadata, execute=execute, clock=clock)
        #: The one store of Sieve scripts, shared with ManageSieve (RFC 5804) and delivery.
        self.sieve_scripts = SieveScripts(metadata)
        #: The one store of DKIM keys, shared with the outbound signer.
        self.dkim_keys = DKIMKeyStore(metadata, execute=execute, clock=clock)
        self._execute = execute
        self._blocking = blocking
        self.server = server
        self._clock = clock
        self.started = clock()

    @property
    def config(self) -> Any:
        """The running server's configuration (live settings change it), else the one given."""
        return self.server.config if self.server is not None else self._config

    @config.setter
    def config(self, value: Any) -> None:
        if self.server is not None:
            self.server.config = value
        self._config = value

    @classmethod
    def for_server(cls, server: Any) -> AdminService:
        """Asynchronous mode, on the reactor: the API's service."""
        return cls(server.directory, server.core, server.metadata, server.config,
                   execute=server.metadata.write, blocking=deferToThread, server=server)

    @classmethod
    def for_stores(cls, stores: Any) -> AdminService:
        """Synchronous mode over ``mailserve.cli.Stores``: the CLI's service."""
        return cls(stores.directory, stores.core, stores.metadata, stores.config,
                   execute=stores.metadata.write_sync, blocking=lambda fn, *a, **k: fn(*a, **k))

    def _hash(self, password: str) -> Any:
        return self._blocking(self.directory.hashing.hash, password)

    # -- domains ---------------------------------------------------------------------------------
    def list_domains(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self.directory.list_domains()]

    @_errors
    def get_domain(self, name: str) -> dict[str, Any]:
        domain = self.directory.get_domain(name)
        return asdict(domain) | {
            "accounts": [a.name for a in self.directory.list_accounts(domain=domain.name, kind="individual")],
            "groups": [g.name for g in self.directory.list_accounts(domain=domain.name, kind="group")],
            "aliases": [a.address for a in self.directory.list_aliases(domain=domain.name)],
        }

    @_errors
    def add_domain(self, name: str, description: str = "") -> Any:
        return _then(self.directory.add_domain(name, description=description), asdict)

    @_errors
    def remove_domain(self, name: str, force: bool = False) -> Any:
        domain = self.directory.get_domain(name)

        def drop_keys(txn) -> None:
            DKIMKeyStore.remove_all_txn(txn, domain.name)

        return _then(self.directory.remove_domain(domain.name, force=force),
                     lambda _: _then(self._execute(drop_keys), lambda _: {"removed": domain.name}))

    @_errors
    def set_catch_all(self, name: str, address: str | None) -> Any:
        return _then(self.directory.set_catch_all(name, address or None), asdict)

    @_errors
    def dns_records(self, name: str) -> list[dict[str, Any]]:
        """What to publish in DNS for ``name`` to receive, send and be found (as Stalwart lists it)."""
        domain = self.directory.get_domain(name).name
        host = self.config.server.hostname.rstrip(".") + "."
        records = [
            DNSRecord(f"{domain}.", "MX", f"10 {host}", "mail for the domain is delivered here (RFC 5321 §5.1)"),
            DNSRecord(f"{domain}.", "TXT", "v=spf1 mx -all", "only this server sends for the domain (RFC 7208)"),
            DNSRecord(f"_dmarc.{domain}.", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}",
                      "policy for mail failing SPF and DKIM alignment (RFC 7489 §6.3)"),
            DNSRecord(f"_smtp._tls.{domain}.", "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{domain}",
                      "reports of TLS failures delivering to the domain (RFC 8460 §3)"),
            DNSRecord(f"_submissions._tcp.{domain}.", "SRV", f"0 1 465 {host}",
                      "mail clients find message submission (RFC 6186, RFC 8314 §5.1)"),
            DNSRecord(f"_imaps._tcp.{domain}.", "SRV", f"0 1 993 {host}", "mail clients find IMAP (RFC 6186)"),
            DNSRecord(f"_pop3s._tcp.{domain}.", "SRV", f"10 1 995 {host}", "mail clients find POP3 (RFC 6186)"),
            DNSRecord(f"_jmap._tcp.{domain}.", "SRV", f"0 1 443 {host}", "JMAP clients find the server (RFC 8620 §2.2)"),
            DNSRecord(f"_caldavs._tcp.{domain}.", "SRV", f"0 1 443 {host}", "calendar clients (RFC 6764 §3)"),
            DNSRecord(f"_carddavs._tcp.{domain}.", "SRV", f"0 1 443 {host}", "contacts clients (RFC 6764 §3)"),
        ]
        for key in self._dkim_keys(domain):
            records.append(DNSRecord(f"{key.selector}._domainkey.{domain}.", "TXT", key.txt,
                                     f"DKIM public key, selector {key.selector} (RFC 6376 §3.6.2)"))
        return [r.public() for r in records]

    # -- DKIM keys (stored by ``mailserve.mailauth.keystore``) -----------------------------------------
    def _dkim_keys(self, domain: str) -> list[DKIMKey]:
        return self.dkim_keys.list(domain)

    @_errors
    def list_dkim_keys(self, domain: str) -> list[dict[str, Any]]:
        name = self.directory.get_domain(domain).name
        return [k.public() for k in self._dkim_keys(name)]

    @_errors
    def get_dkim_key(self, domain: str, selector: str) -> dict[str, Any]:
        name = self.directory.get_domain(domain).name
        key = self.dkim_keys.get(name, selector)
        if key is None:
            raise NotFound(f"no DKIM key with selector {selector!r} for {name}")
        return key.public()

    def signing_key(self, domain: str, selector: str) -> tuple[str, bytes] | None:
        """``(algorithm, private key PEM)`` for the signer, or ``None`` (synchronous read)."""
        key = self.dkim_keys.get(domain, selector)
        return None if key is None else (key.algorithm, key.private_key.encode("ascii"))

    @_errors
    def generate_dkim_key(self, domain: str, selector: str | None = None, algorithm: str = "rsa-sha256") -> Any:
        """Generate (in a thread) and store a signing key; fires with its public view and TXT record.

        The default selector is dated (``ms202612r``), so keys can be rotated by adding a new
        one before removing the old (RFC 6376 §3.1, M3AAWG rotation advice).
        """
        name = self.directory.get_domain(domain).name
        if algorithm not in DKIM_ALGORITHMS:
            raise InvalidRequest(f"algorithm must be one of {', '.join(DKIM_ALGORITHMS)}", field="algorithm")
        if selector is not None and (len(selector) > 63 or not SELECTOR.match(selector.lower())):
            raise InvalidRequest(f"not a valid DKIM selector: {selector!r} (DNS labels, RFC 6376 §3.1)",
                                 field="selector")
        made = self._blocking(make_key, name, algorithm, selector, self._clock())
        return _then(_then(made, self.dkim_keys.add), lambda key: key.public())

    @_errors
    def remove_dkim_key(self, domain: str, selector: str) -> Any:
        name = self.directory.get_domain(domain).name
        selector = selector.lower()
        return _then(self.dkim_keys.remove(name, selector), lambda _: {"removed": f"{selector}._domainkey.{name}"})

    # -- accounts --------------------------------------------------------------------------------
    def list_accounts(self, domain: str | None = None) -> list[dict[str, Any]]:
        return [account_view(a) for a in self.directory.list_accounts(domain=domain, kind="individual")]

    @_errors
    def get_account(self, name: str) -> dict[str, Any]:
        account = self._individual(name)
        return account_view(account, self.core.get_quota(account.id))

    def _individual(self, name: str) -> Any:
        account = self.directory.get_account(name)
        if account.kind != "individual":
            raise NotFound(f"no such account: {name} (it is a group)")
        return account

    @_errors
    def add_account(self, name: str, password: str, addresses: list[str] = (), display_name: str = "",
                    quota_bytes: int = 0, role: str = "user") -> Any:
        check_password(password)
        # Refuse bad values before the (slow) hash, with the directory's own checks.
        from mailserve.directory.directory import normalise_address

        # The same address given twice (perhaps in another case) is one address.
        unique: dict[str, str] = {}
        for address in addresses:
            unique.setdefault(normalise_address(address), address)
        addresses = list(unique)

        def create(password_hash: str) -> Any:
            return self.directory.add_account(
                name, addresses=list(addresses), display_name=display_name, quota_bytes=quota_bytes,
                role=role, password_hash=password_hash)

        return _then(_then(self._hash(password), create), account_view)

    @_errors
    def update_account(self, name: str, *, display_name: str | None = None, quota_bytes: int | None = None,
                       enabled: bool | None = None, role: str | None = None,
                       password: str | None = None) -> Any:
        """Change several settings at once: all are validated before anything is written."""
        if password is not None:
            check_password(password)
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidRequest("quota must not be negative", field="quota_bytes")
        if role is not None and role not in ("user", "admin"):
            raise InvalidRequest("role must be user or admin", field="role")
        target = self._individual(name)
        if enabled is False or role == "user":
            self._require_other_admin(target)

        def apply(password_hash: str | None) -> Any:
            update = getattr(self.directory, "update_account", None)
            if update is not None:
                return update(name, display_name=display_name, quota_bytes=quota_bytes, enabled=enabled,
                              role=role, password_hash=password_hash)
            # Until Directory.update_account exists: one change per transaction, in an order where
            # only the first can fail (the account vanished), so none is left half-applied.
            steps: list[Callable[[], Any]] = []
            if display_name is not None:
                steps.append(lambda: self.directory.set_display_name(name, display_name))
            if quota_bytes is not None:
                steps.append(lambda: self.directory.set_quota(name, quota_bytes))
            if enabled is not None:
                steps.append(lambda: self.directory.set_enabled(name, enabled))
            if role is not None:
                steps.append(lambda: self.directory.set_role(name, role))
            if password_hash is not None:
                steps.append(lambda: self.directory.set_password(name, password_hash=password_hash))
            result: Any = self.directory.get_account(name)
            for step in steps:
                result = _then(result, lambda _, step=step: step())
            return result

        hashed = self._hash(password) if password is not None else None
        return _then(_then(hashed, apply),
                     lambda account: account_view(account, self.core.get_quota(account.id)))

    @_errors
    def change_own_password(self, account_id: int, current: str, new: str) -> Any:
        """A user's own change: the current password is asked again (OWASP ASVS 2.1.6)."""
        check_password(new, field="new_password")
        if not isinstance(current, str) or len(current) > MAX_PASSWORD_LENGTH:
            raise InvalidRequest("current_password is required", field="current_password")
        account = self.directory.get_account_by_id(account_id)

        def verified(ok: bool) -> Any:
            if not ok:
                # 403, not 400: the request is well formed; the caller failed to prove who they are.
                raise Forbidden("the current password is not right", field="current_password")
            return _then(self._hash(new), lambda h: self.directory.set_password(account.name, password_hash=h))

        check = self._blocking(self.directory.hashing.verify, account.password_hash, current)
        return _then(_then(check, verified), lambda a: {"updated": a.name})

    @_errors
    def set_password(self, name: str, password: str) -> Any:
        check_password(password)
        self.directory.get_account(name)
        return _then(_then(self._hash(password), lambda h: self.directory.set_password(name, password_hash=h)),
                     lambda a: {"updated": a.name})

    def _require_other_admin(self, target: Any) -> None:
        """Refuse to remove, disable or demote the last enabled administrator: nobody could
        administer the server any more (from the web admin or the API)."""
        if target.role != "admin" or not target.enabled:
            return
        others = [a for a in self.directory.list_accounts(kind="individual")
                  if a.role == "admin" and a.enabled and a.id != target.id]
        if not others:
            raise Conflict(f"{target.name} is the last enabled administrator; make another one first")

    @_errors
    def remove_account(self, name: str) -> Any:
        account = self._individual(name)
        self._require_other_admin(account)
        return _then(self.directory.remove_account(account.name),
                     lambda _: _then(self.credentials.revoke_all_of(account.id), lambda _: {"removed": account.name}))

    @_errors
    def add_address(self, name: str, address: str) -> Any:
        self._individual(name)
        return _then(self.directory.add_address(name, address), account_view)

    @_errors
    def remove_address(self, name: str, address: str) -> Any:
        self._individual(name)
        return _then(self.directory.remove_address(name, address), account_view)

    @_errors
    def get_quota(self, name: str) -> dict[str, Any]:
        account = self._individual(name)
        return asdict(self.core.get_quota(account.id))

    @_errors
    def set_quota(self, name: str, quota_bytes: int) -> Any:
        self._individual(name)
        if quota_bytes < 0:
            raise InvalidRequest("quota must not be negative", field="bytes_limit")
        return _then(self.directory.set_quota(name, quota_bytes),
                     lambda account: asdict(self.core.get_quota(account.id)))

    # -- aliases and groups -------------------------------------------------------------------------
    def list_aliases(self, domain: str | None = None) -> list[dict[str, Any]]:
        return [{"address": a.address, "targets": list(a.targets)} for a in self.directory.list_aliases(domain)]

    @_errors
    def get_alias(self, address: str) -> dict[str, Any]:
        alias = self.directory.get_alias(address)
        return {"address": alias.address, "targets": list(alias.targets)}

    @_errors
    def add_alias(self, address: str, targets: list[str]) -> Any:
        return _then(self.directory.add_alias(address, list(targets)),
                     lambda a: {"address": a.address, "targets": list(a.targets)})

    @_errors
    def remove_alias(self, address: str) -> Any:
        return _then(self.directory.remove_alias(address), lambda _: {"removed": address.strip().lower()})

    def list_groups(self) -> list[dict[str, Any]]:
        return [g.public() for g in self.directory.list_accounts(kind="group")]

    def _group(self, name: str) -> Any:
        group = self.directory.get_account(name)
        if group.kind != "group":
            raise NotFound(f"no such group: {name}")
        return group

    @_errors
    def get_group(self, name: str) -> dict[str, Any]:
        return self._group(name).public()

    @_errors
    def add_group(self, name: str, address: str, members: list[str], display_name: str = "") -> Any:
        if not members:
            raise InvalidRequest("a group needs at least one member", field="members")
        return _then(self.directory.add_group(name, address, list(members), display_name=display_name),
                     lambda g: g.public())

    @_errors
    def set_members(self, name: str, members: list[str]) -> Any:
        self._group(name)
        if not members:
            raise InvalidRequest("a group needs at least one member", field="members")
        return _then(self.directory.set_members(name, list(members)), lambda g: g.public())

    @_errors
    def remove_group(self, name: str) -> Any:
        group = self._group(name)
        return _then(self.directory.remove_account(group.name), lambda _: {"removed": group.name})

    # -- app passwords and API tokens --------------------------------------------------------------
    def list_app_passwords(self, account_id: int) -> list[dict[str, Any]]:
        return [p.public() for p in self.credentials.list_app_passwords(account_id)]

    @_errors
    def create_app_password(self, account_id: int, label: str) -> Any:
        return _then(self.credentials.create_app_password(account_id, label),
                     lambda pair: pair[0].public() | {"password": pair[1]})

    @_errors
    def revoke_app_password(self, account_id: int, password_id: int) -> Any:
        return _then(self.credentials.revoke_app_password(account_id, password_id),
                     lambda p: {"removed": p.id})

    def list_api_tokens(self) -> list[dict[str, Any]]:
        accounts = {a.id: a.name for a in self.directory.list_accounts()}
        return [t.public() | {"account_name": accounts.get(t.account, "")} for t in self.credentials.list_api_tokens()]

    @_errors
    def create_api_token(self, account_name: str, label: str, lifetime: float = 0) -> Any:
        account = self._individual(account_name)
        return _then(self.credentials.create_api_token(account.id, label, lifetime),
                     lambda pair: pair[0].public() | {"account_name": account.name, "token": pair[1]})

    @_errors
    def revoke_api_token(self, token_id: int) -> Any:
        return _then(self.credentials.revoke_api_token(token_id), lambda t: {"removed": t.id})

    # -- outbound queue and spam training (parts built by other packages) --------------------------
    def _server_part(self, name: str, what: str) -> Any:
        """A part of the running server, or :class:`Unavailable` (CLI mode, or a part that cannot be built)."""
        part = None
        if self.server is not None:
            try:
                part = getattr(self.server, name, None)
            except Exception:  # noqa: BLE001 - a part that cannot be built is not available
                part = None
        if part is None:
            raise Unavailable(f"the {what} is not available in this server")
        return part

    # -- outbound queue (records kept by ``mailserve.smtp.queue.QueueStore``) ---------------------------
    @staticmethod
    def _queue_id(entry_id: int | str) -> int:
        text = str(entry_id)
        if not text.isdigit() or len(text) > 18:
            raise NotFound(f"no queued message {entry_id}")
        return int(text)

    def list_queue(self) -> Any:
        """Every queued message (read in a thread on a server: the queue can be long)."""
        from mailserve.smtp.queue import QueueStore

        return self._blocking(self.metadata.read, QueueStore.list_txn)

    @_errors
    def show_queued(self, entry_id: int | str) -> Any:
        from mailserve.smtp.queue import QueueStore

        number = self._queue_id(entry_id)
        entry = self.metadata.read(lambda txn: QueueStore.get_txn(txn, number))
        if entry is None:
            raise NotFound(f"no queued message {number}")
        return entry

    @_errors
    def retry_queued(self, entry_id: int | str | None = None) -> Any:
        """Make one message (or, with ``None``, every one) due now; fires with the ids retried.

        A running server is woken at once; otherwise it sees the change within its poll interval.
        """
        from mailserve.smtp.queue import QueueStore

        number = None if entry_id is None else self._queue_id(entry_id)
        now = self._clock()

        def fn(txn: Any) -> list[int]:
            ids = [e.id for e in QueueStore.list_txn(txn)] if number is None else [number]
            done = [i for i in ids if QueueStore.retry_txn(txn, i, now) is not None]
            if number is not None and not done:
                raise NotFound(f"no queued message {number}")
            return done

        def woken(done: list[int]) -> list[int]:
            queue = getattr(self.server, "outbound_queue", None) if self.server is not None else None
            if queue is not None and done:
                queue.wake()
            return done

        return _then(self._execute(fn), woken)

    @_errors
    def delete_queued(self, entry_id: int | str) -> Any:
        """Drop a message without a report to anyone; fires with the removed entry."""
        from mailserve.smtp.queue import QueueStore

        number = self._queue_id(entry_id)

        def fn(txn: Any) -> tuple[Any, bool]:
            entry = QueueStore.get_txn(txn, number)
            if entry is None:
                raise NotFound(f"no queued message {number}")
            return entry, QueueStore.remove_txn(txn, entry)

        def release(result: tuple[Any, bool]) -> Any:
            entry, unreferenced = result
            if not unreferenced:
                return entry
            return _then(self._blocking(self._delete_unreferenced_blob, entry.blob_id), lambda _: entry)

        return _then(self._execute(fn), release)

    def _delete_unreferenced_blob(self, blob_id: str) -> None:
        # Checked again outside the transaction: a delivery may have stored the same bytes since.
        if self.metadata.read(lambda txn: txn.get(keys.blob_refs(blob_id))) is None:
            self.core.blobs.delete(blob_id)

    # -- Sieve scripts (the same store and rules as ManageSieve, RFC 5804) ----------------------
    def _sieve_limits(self) -> tuple[int, int]:
        settings = self.config.managesieve
        return settings.max_scripts, settings.max_script_size

    def list_sieve_scripts(self, account_id: int) -> list[dict[str, Any]]:
        """Every script of the account and which one is active (LISTSCRIPTS, RFC 5804 §2.7)."""
        return [{"name": name, "active": active} for name, active in self.sieve_scripts.list_scripts(account_id)]

    @_errors
    def get_sieve_script(self, account_id: int, name: str) -> dict[str, Any]:
        name = check_script_name(name)
        text = self.sieve_scripts.get_script(account_id, name)
        active = dict(self.sieve_scripts.list_scripts(account_id)).get(name, False)
        return {"name": name, "active": active, "script": text}

    @_errors
    def put_sieve_script(self, account_id: int, name: str, text: str, activate: bool = False) -> Any:
        """Compile, then store (and optionally activate) a script; fires with its view and
        whether it was created.

        As PUTSCRIPT (RFC 5804 §2.6): a script that does not compile is refused with where it
        is wrong (:class:`InvalidScript`, line and column) and nothing is stored; the quotas on
        size and number are checked before the compile and again in the write transaction.
        """
        from mailserve.sieve.errors import SieveSyntaxError
        from mailserve.sieve.interpreter import SieveLimits, compile_script

        name = check_script_name(name)
        max_scripts, max_size = self._sieve_limits()
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > max_size:
            raise TooLarge(f"the script has {size} bytes; at most {max_size} are allowed", field="script")
        self.sieve_scripts.check_space(account_id, name, size, max_scripts, max_size)
        existed = any(n == name for n, _ in self.sieve_scripts.list_scripts(account_id))
        limits = SieveLimits(max_script_size=max_size, max_redirects=self.config.managesieve.max_redirects)

        def compiled(outcome: Any) -> Any:
            if isinstance(outcome, SieveSyntaxError):
                raise InvalidScript(outcome.message, outcome.line, outcome.column)
            stored = self.sieve_scripts.put_script(account_id, name, text, max_scripts, max_size)
            if activate:
                stored = _then(stored, lambda _: self.sieve_scripts.set_active(account_id, name))
            return _then(stored, lambda _: {"script": self.get_sieve_script(account_id, name),
                                            "created": not existed})

        def check(script_text: str) -> Any:
            try:
                return compile_script(script_text, limits)
            except SieveSyntaxError as e:
                return e

        # Compiling a large script takes longer than the reactor may be held.
        return _then(self._blocking(check, text), compiled)

    @_errors
    def activate_sieve_script(self, account_id: int, name: str) -> Any:
        """Make ``name`` the script run at delivery (SETACTIVE, RFC 5804 §2.8)."""
        name = check_script_name(name)
        return _then(self.sieve_scripts.set_active(account_id, name),
                     lambda _: {"name": name, "active": True})

    @_errors
    def deactivate_sieve_script(self, account_id: int, name: str) -> Any:
        """Run no script at delivery (``SETACTIVE ""``); ``name`` must be the active one."""
        name = check_script_name(name)
        scripts = dict(self.sieve_scripts.list_scripts(account_id))
        if name not in scripts:
            raise NotFound(f"there is no script named {name!r}")
        if not scripts[name]:
            raise Conflict(f"{name!r} is not the active script")
        return _then(self.sieve_scripts.set_active(account_id, ""), lambda _: {"name": name, "active": False})

    @_errors
    def delete_sieve_script(self, account_id: int, name: str) -> Any:
        """Delete a script; the active one is refused (DELETESCRIPT, RFC 5804 §2.10)."""
        name = check_script_name(name)
        return _then(self.sieve_scripts.delete_script(account_id, name), lambda _: {"removed": name})

    # -- spam training ------------------------------------------------------------------------------
    def spam_filter(self) -> Any:
        """The server's ``SpamFilter`` (``server.spam_filter``), or :class:`Unavailable`."""
        return self._server_part("spam_filter", "spam filter")

    @_errors
    def train_spam(self, account_id: int | None, message: bytes, is_spam: bool) -> Any:
        """Teach the Bayes filter one message as spam or ham, for an account (and, by the
        filter's setting, everyone) or, with ``None``, the server-wide database."""
        if not message:
            raise InvalidRequest("the message is empty", field="message")
        spam_filter = self.spam_filter()
        outcome = spam_filter.train(account_id, message, is_spam)
        return _then(outcome, lambda o: {"class": "spam" if is_spam else "ham", "status": o.status,
                                         "tokens": o.tokens})

    # -- status ---------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from mailserve import __version__

        server = self.server
        listeners = []
        if server is not None:
            addresses = server.listening()
            for listener in self.config.listeners:
                listeners.append({
                    "id": listener.id,
                    "protocol": listener.protocol,
                    "tls": listener.tls.implicit,
                    "addresses": [f"{h}:{p}" for h, p in addresses.get(listener.id, [])],
                })
        accounts = self.directory.list_accounts()
        return {
            "version": __version__,
            "hostname": self.config.server.hostname,
            "uptime_seconds": round(max(0.0, self._clock() - self.started), 3),
            "domains": len(self.directory.list_domains()),
            "accounts": sum(1 for a in accounts if a.kind == "individual"),
            "groups": sum(1 for a in accounts if a.kind == "group"),
            "aliases": len(self.directory.list_aliases()),
            "listeners": listeners,
        }
