"""Domains, accounts, aliases and groups: who may log in, and where mail to an address goes.

One implementation of every directory operation, used by the CLI (synchronously, through
``IMetadataStore.write_sync``, whether or not the server runs) and by the server's admin
API (through ``write``, returning Deferreds): a ``Directory`` is built with the one
``execute`` function that fits where it runs.

Addresses are stored lower-cased (domain parts are case-insensitive, and every serious
server treats local parts so too).  Each address maps to exactly one target: an account, a
group (expands to its members) or an alias (a list of addresses, local or remote).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread

from mailserve.core import keys
from mailserve.core.model import pack, unpack
from mailserve.directory.passwords import PasswordHashing
from mailserve.directory.throttle import AuthThrottle
from mailserve.interfaces import IMetadataStore


class DirectoryError(Exception):
    """A refused directory operation; ``str()`` says what to do instead."""


class NotFound(DirectoryError):
    pass


class AlreadyExists(DirectoryError):
    pass


class InvalidValue(DirectoryError):
    pass


class AuthenticationFailed(Exception):
    pass


class TooManyFailures(AuthenticationFailed):
    pass


_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_LOCAL_RE = re.compile(r"^[^\s@<>()\[\]\\,;:\"]{1,64}$")
_LOGIN_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,255}$")

ROLE_USER, ROLE_ADMIN = "user", "admin"
KIND_INDIVIDUAL, KIND_GROUP = "individual", "group"


def normalise_domain(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidValue(f"not a valid domain name: {name!r}") from None
    if not _DOMAIN_RE.match(name) or "." not in name and name != "localhost":
        raise InvalidValue(f"not a valid domain name: {name!r}")
    return name


def normalise_address(address: str) -> str:
    address = address.strip()
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        raise InvalidValue(f"not an email address: {address!r} (expected local@domain)")
    if not _LOCAL_RE.match(local):
        raise InvalidValue(f"not a valid local part: {local!r}")
    return f"{local.lower()}@{normalise_domain(domain)}"


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain


@dataclass(frozen=True)
class Domain:
    name: str
    catch_all: str | None = None
    created: int = 0
    description: str = ""


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    kind: str = KIND_INDIVIDUAL
    role: str = ROLE_USER
    display_name: str = ""
    addresses: tuple[str, ...] = ()
    password_hash: str | None = None
    quota_bytes: int = 0
    enabled: bool = True
    members: tuple[str, ...] = ()  # groups: member addresses
    created: int = 0

    @property
    def primary_address(self) -> str | None:
        return self.addresses[0] if self.addresses else None

    def public(self) -> dict[str, Any]:
        """The record as shown to admins: never the password hash."""
        d = asdict(self)
        d.pop("password_hash")
        d["addresses"] = list(self.addresses)
        d["members"] = list(self.members)
        return d


@dataclass(frozen=True)
class Alias:
    address: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    """Where mail to one address goes: local accounts and remote forwarding addresses."""

    accounts: tuple[int, ...] = ()
    remote: tuple[str, ...] = ()
    detail: str | None = None  # the ``+tag`` of a sub-address (RFC 5233)

    @property
    def found(self) -> bool:
        return bool(self.accounts or self.remote)


@dataclass
class _Target:
    kind: str  # "account" | "alias"
    account: int = 0
    targets: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return pack([self.kind, self.account, self.targets])

    @classmethod
    def from_bytes(cls, data: bytes) -> _Target:
        kind, account, targets = unpack(data)
        return cls(kind, account, list(targets))


MAX_ALIAS_DEPTH = 10


class Directory:
    def __init__(
        self,
        metadata: IMetadataStore,
        core: Any,
        execute: Callable[[Callable], Any] | None = None,
        hashing: PasswordHashing | None = None,
        throttle: AuthThrottle | None = None,
        clock: Callable[[], float] = time.time,
        subaddress_separator: str = "+",
    ) -> None:
        self.metadata = metadata
        self.core = core
        self._execute = execute or metadata.write_sync
        self.hashing = hashing or PasswordHashing()
        self.throttle = throttle or AuthThrottle()
        self._clock = clock
        self.subaddress_separator = subaddress_separator

    # -- reads -------------------------------------------------------------------------
    def _read(self, fn):
        return self.metadata.read(fn)

    def get_domain(self, name: str) -> Domain:
        name = normalise_domain(name)
        data = self._read(lambda txn: txn.get(keys.domain(name)))
        if data is None:
            raise NotFound(f"no such domain: {name}")
        return Domain(**unpack(data))

    def list_domains(self) -> list[Domain]:
        return self._read(lambda txn: [Domain(**unpack(v)) for _, v in txn.scan(keys.DOMAINS_PREFIX)])

    def is_local_domain(self, domain: str) -> bool:
        try:
            name = normalise_domain(domain)
        except InvalidValue:
            return False
        return self._read(lambda txn: txn.get(keys.domain(name))) is not None

    @staticmethod
    def _account_txn(txn, account_id: int) -> Account | None:
        data = txn.get(keys.account(account_id))
        if data is None:
            return None
        d = unpack(data)
        d["addresses"] = tuple(d["addresses"])
        d["members"] = tuple(d["members"])
        return Account(**d)

    def get_account_by_id(self, account_id: int) -> Account:
        account = self._read(lambda txn: self._account_txn(txn, account_id))
        if account is None:
            raise NotFound(f"no such account: {account_id}")
        return account

    def _find_account_txn(self, txn, name: str) -> Account | None:
        """By login name, or by any of its addresses."""
        value = txn.get(keys.login(name.lower()))
        if value is not None:
            return self._account_txn(txn, keys.U32.unpack(value)[0])
        if "@" in name:
            try:
                address = normalise_address(name)
            except InvalidValue:
                return None
            data = txn.get(keys.address(address))
            if data is not None:
                target = _Target.from_bytes(data)
                if target.kind == "account":
                    return self._account_txn(txn, target.account)
        return None

    def get_account(self, name: str) -> Account:
        account = self._read(lambda txn: self._find_account_txn(txn, name))
        if account is None:
            raise NotFound(f"no such account: {name}")
        return account

    def list_accounts(self, domain: str | None = None, kind: str | None = None) -> list[Account]:
        def fn(txn) -> list[Account]:
            out = []
            for key, _ in txn.scan(keys.ACCOUNTS_PREFIX):
                account = self._account_txn(txn, keys.U32.unpack_from(key, 2)[0])
                if kind is not None and account.kind != kind:
                    continue
                if domain is not None and not any(a.endswith("@" + domain) for a in account.addresses):
                    continue
                out.append(account)
            return out

        if domain is not None:
            domain = normalise_domain(domain)
        return self._read(fn)

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        def fn(txn) -> list[Alias]:
            out = []
            for key, value in txn.scan(keys.ADDRESSES_PREFIX):
                target = _Target.from_bytes(value)
                if target.kind == "alias":
                    address = key[len(keys.ADDRESSES_PREFIX):].decode()
                    if domain is None or address.endswith("@" + domain):
                        out.append(Alias(address, tuple(target.targets)))
            return out

        if domain is not None:
            domain = normalise_domain(domain)
        return self._read(fn)

    def get_alias(self, address: str) -> Alias:
        address = normalise_address(address)
        data = self._read(lambda txn: txn.get(keys.address(address)))
        if data is None or _Target.from_bytes(data).kind != "alias":
            raise NotFound(f"no such alias: {address}")
        return Alias(address, tuple(_Target.from_bytes(data).targets))

    # -- recipient resolution ------------------------------------------------------------
    def resolve_recipient(self, address: str) -> Resolution:
        """Where mail to ``address`` goes: exact address, then ``local+detail``, then catch-all."""
        try:
            address = normalise_address(address)
        except InvalidValue:
            return Resolution()
        return self._read(lambda txn: self._resolve_txn(txn, address))

    def _resolve_txn(self, txn, address: str) -> Resolution:
        local, domain = split_address(address)
        if txn.get(keys.domain(domain)) is None:
            return Resolution()
        result = self._expand(txn, address, 0, set())
        if result.found:
            return result
        sep = self.subaddress_separator
        if sep and sep in local:
            base, _, detail = local.partition(sep)
            if base:
                result = self._expand(txn, f"{base}@{domain}", 0, set())
                if result.found:
                    return replace(result, detail=detail)
        catch_all = Domain(**unpack(txn.get(keys.domain(domain)))).catch_all
        if catch_all:
            return self._expand(txn, catch_all, 0, set())
        return Resolution()

    def _expand(self, txn, address: str, depth: int, seen: set[str]) -> Resolution:
        if address in seen or depth > MAX_ALIAS_DEPTH:
            return Resolution()
        seen.add(address)
        data = txn.get(keys.address(address))
        if data is None:
            _, domain = split_address(address)
            if txn.get(keys.domain(domain)) is None:
                return Resolution(remote=(address,))
            return Resolution()
        target = _Target.from_bytes(data)
        if target.kind == "account":
            account = self._account_txn(txn, target.account)
            if account is None or not account.enabled:
                return Resolution()
            if account.kind == KIND_GROUP:
                targets = list(account.members)
            else:
                return Resolution(accounts=(account.id,))
        else:
            targets = target.targets
        accounts: list[int] = []
        remote: list[str] = []
        for t in targets:
            sub = self._expand(txn, t, depth + 1, seen)
            accounts.extend(a for a in sub.accounts if a not in accounts)
            remote.extend(r for r in sub.remote if r not in remote)
        return Resolution(tuple(accounts), tuple(remote))

    def addresses_of(self, account_id: int) -> tuple[str, ...]:
        """Addresses an account may send as: its own, and the aliases and groups that deliver to it."""
        account = self.get_account_by_id(account_id)
        own = list(account.addresses)
        for alias in self.list_aliases():
            if account_id in self.resolve_recipient(alias.address).accounts:
                own.append(alias.address)
        for group in self.list_accounts(kind=KIND_GROUP):
            for address in group.addresses:
                if account_id in self.resolve_recipient(address).accounts:
                    own.append(address)
        return tuple(own)

    # -- authentication ---------------------------------------------------------------------
    def verify_password(self, login: str, password: str) -> Account | None:
        """Blocking (Argon2): the account if the password is right and it may log in."""
        account = self._read(lambda txn: self._find_account_txn(txn, login))
        stored = account.password_hash if account is not None else None
        ok = self.hashing.verify(stored, password)
        if not ok and account is not None:
            # An app password stands in for the account password everywhere
            # (mailserve.directory.credentials); the Argon2 check above already ran, so the time
            # taken does not reveal which of the two matched.
            from mailserve.directory.credentials import Credentials

            ok = self._read(lambda txn: Credentials.app_password_matches(txn, account.id, password))
        if not ok or account is None or not account.enabled or account.kind != KIND_INDIVIDUAL:
            return None
        return account

    def authenticate(self, login: str, password: str, remote_ip: str | None = None) -> Deferred:
        """Fires with the Account, or fails with ``AuthenticationFailed``.

        The Argon2 check runs in a thread; an address over its failure budget is refused
        before any check.
        """
        from mailserve.directory.credentials import current_authentication_source, report_authentication_failure

        # Which protocol asks (for mailserve_auth_failures_total), read now: ``done`` runs later.
        source = current_authentication_source()
        if self.throttle.blocked(remote_ip):
            from twisted.internet.defer import fail

            report_authentication_failure(source)
            return fail(TooManyFailures("too many failed logins from this address; try later"))

        def done(account: Account | None) -> Account:
            if account is None:
                self.throttle.failed(remote_ip)
                report_authentication_failure(source)
                raise AuthenticationFailed("invalid credentials")
            self.throttle.succeeded(remote_ip)
            return account

        return deferToThread(self.verify_password, login, password).addCallback(done)

    # -- domain administration -------------------------------------------------------------------
    def add_domain(self, name: str, description: str = "") -> Any:
        name = normalise_domain(name)

        def fn(txn) -> Domain:
            if txn.get(keys.domain(name)) is not None:
                raise AlreadyExists(f"domain already exists: {name}")
            domain = Domain(name, None, int(self._clock()), description)
            txn.put(keys.domain(name), pack(asdict(domain)))
            return domain

        return self._execute(fn)

    def remove_domain(self, name: str, force: bool = False) -> Any:
        """Remove a domain; refused while addresses use it, unless ``force`` removes them too."""
        name = normalise_domain(name)

        def fn(txn) -> None:
            if txn.get(keys.domain(name)) is None:
                raise NotFound(f"no such domain: {name}")
            in_use = [k[len(keys.ADDRESSES_PREFIX):].decode() for k, _ in txn.scan(keys.ADDRESSES_PREFIX)
                      if k.endswith(b"@" + name.encode())]
            if in_use and not force:
                raise DirectoryError(
                    f"domain {name} still has {len(in_use)} address(es), e.g. {in_use[0]}; "
                    "remove them first or use --force"
                )
            for address in in_use:
                self._unlink_address_txn(txn, address)
            txn.delete(keys.domain(name))

        return self._execute(fn)

    def set_catch_all(self, domain: str, address: str | None) -> Any:
        domain = normalise_domain(domain)
        if address:
            address = normalise_address(address)

        def fn(txn) -> Domain:
            data = txn.get(keys.domain(domain))
            if data is None:
                raise NotFound(f"no such domain: {domain}")
            updated = replace(Domain(**unpack(data)), catch_all=address or None)
            txn.put(keys.domain(domain), pack(asdict(updated)))
            return updated

        return self._execute(fn)

    def _unlink_address_txn(self, txn, address: str) -> None:
        data = txn.get(keys.address(address))
        if data is None:
            return
        target = _Target.from_bytes(data)
        txn.delete(keys.address(address))
        if target.kind == "account":
            account = self._account_txn(txn, target.account)
            if account is not None:
                self._save_account_txn(
                    txn, replace(account, addresses=tuple(a for a in account.addresses if a != address))
                )

    # -- account administration --------------------------------------------------------------
    @staticmethod
    def _save_account_txn(txn, account: Account) -> None:
        d = asdict(account)
        d["addresses"] = list(account.addresses)
        d["members"] = list(account.members)
        txn.put(keys.account(account.id), pack(d))

    def _claim_address_txn(self, txn, address: str, target: _Target) -> None:
        _, domain = split_address(address)
        if txn.get(keys.domain(domain)) is None:
            raise NotFound(f"domain {domain} is not served here; add it first (mailserve domain add {domain})")
        if txn.get(keys.address(address)) is not None:
            raise AlreadyExists(f"address already in use: {address}")
        txn.put(keys.address(address), target.to_bytes())

    def add_account(
        self,
        name: str,
        password: str | None = None,
        addresses: tuple[str, ...] | list[str] = (),
        display_name: str = "",
        quota_bytes: int = 0,
        role: str = ROLE_USER,
        password_hash: str | None = None,
        kind: str = KIND_INDIVIDUAL,
        members: tuple[str, ...] | list[str] = (),
    ) -> Any:
        """Create an account with its mailboxes, in one transaction.

        ``password`` is hashed here (blocking); callers on the reactor pass ``password_hash``
        computed in a thread instead.
        """
        if not _LOGIN_RE.match(name):
            raise InvalidValue(f"not a valid account name: {name!r} (letters, digits and ._@+- only)")
        if role not in (ROLE_USER, ROLE_ADMIN):
            raise InvalidValue(f"role must be {ROLE_USER} or {ROLE_ADMIN}, not {role!r}")
        if quota_bytes < 0:
            raise InvalidValue("quota must not be negative")
        normalised = [normalise_address(a) for a in addresses]
        if len(set(normalised)) != len(normalised):
            raise InvalidValue("the same address is given twice")
        member_addresses = tuple(normalise_address(a) for a in members)
        if password is not None and password_hash is None:
            password_hash = self.hashing.hash(password)
        login = name.lower()

        def fn(txn) -> Account:
            if txn.get(keys.login(login)) is not None:
                raise AlreadyExists(f"account already exists: {name}")
            if "@" in login and txn.get(keys.address(login)) is not None and login not in normalised:
                raise AlreadyExists(f"{name} is already an address of another account or alias")
            account_id = txn.incr(keys.NEXT_ACCOUNT)
            account = Account(
                account_id, name, kind, role, display_name, tuple(normalised), password_hash,
                quota_bytes, True, member_addresses, int(self._clock()),
            )
            for address in normalised:
                self._claim_address_txn(txn, address, _Target("account", account_id))
            txn.put(keys.login(login), keys.U32.pack(account_id))
            self._save_account_txn(txn, account)
            if kind == KIND_INDIVIDUAL:
                self.core.provision_account(txn, account_id, quota_bytes)
            return account

        return self._execute(fn)

    def add_group(self, name: str, address: str, members: list[str], display_name: str = "") -> Any:
        """A distribution group: mail to its address goes to every member."""
        return self.add_account(
            name, addresses=[address], display_name=display_name, kind=KIND_GROUP, members=members
        )

    def _update_account(self, name: str, change: Callable[[Any, Account], Account]) -> Any:
        def fn(txn) -> Account:
            account = self._find_account_txn(txn, name)
            if account is None:
                raise NotFound(f"no such account: {name}")
            updated = change(txn, account)
            self._save_account_txn(txn, updated)
            return updated

        return self._execute(fn)

    def set_password(self, name: str, password: str | None = None, password_hash: str | None = None) -> Any:
        if password is not None:
            password_hash = self.hashing.hash(password)
        if not password_hash:
            raise InvalidValue("a password is required")
        return self._update_account(name, lambda txn, a: replace(a, password_hash=password_hash))

    def set_quota(self, name: str, quota_bytes: int) -> Any:
        if quota_bytes < 0:
            raise InvalidValue("quota must not be negative")

        def change(txn, account: Account) -> Account:
            key = keys.counter(account.id, keys.QUOTA_BYTES_LIMIT)
            txn.incr(key, quota_bytes - txn.counter(key))
            return replace(account, quota_bytes=quota_bytes)

        return self._update_account(name, change)

    def update_account(
        self,
        name: str,
        *,
        display_name: str | None = None,
        quota_bytes: int | None = None,
        enabled: bool | None = None,
        role: str | None = None,
        password_hash: str | None = None,
    ) -> Any:
        """Change several settings of an account in one transaction: all of them or none."""
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidValue("quota must not be negative")
        if role is not None and role not in (ROLE_USER, ROLE_ADMIN):
            raise InvalidValue(f"role must be {ROLE_USER} or {ROLE_ADMIN}, not {role!r}")

        def change(txn, account: Account) -> Account:
            updated = account
            if quota_bytes is not None:
                key = keys.counter(account.id, keys.QUOTA_BYTES_LIMIT)
                txn.incr(key, quota_bytes - txn.counter(key))
                updated = replace(updated, quota_bytes=quota_bytes)
            if display_name is not None:
                updated = replace(updated, display_name=display_name)
            if enabled is not None:
                updated = replace(updated, enabled=enabled)
            if role is not None:
                updated = replace(updated, role=role)
            if password_hash is not None:
                updated = replace(updated, password_hash=password_hash)
            return updated

        return self._update_account(name, change)

    def set_enabled(self, name: str, enabled: bool) -> Any:
        return self._update_account(name, lambda txn, a: replace(a, enabled=enabled))

    def set_display_name(self, name: str, display_name: str) -> Any:
        return self._update_account(name, lambda txn, a: replace(a, display_name=display_name))

    def set_role(self, name: str, role: str) -> Any:
        if role not in (ROLE_USER, ROLE_ADMIN):
            raise InvalidValue(f"role must be {ROLE_USER} or {ROLE_ADMIN}, not {role!r}")
        return self._update_account(name, lambda txn, a: replace(a, role=role))

    def add_address(self, name: str, address: str) -> Any:
        address = normalise_address(address)

        def change(txn, account: Account) -> Account:
            self._claim_address_txn(txn, address, _Target("account", account.id))
            return replace(account, addresses=account.addresses + (address,))

        return self._update_account(name, change)

    def remove_address(self, name: str, address: str) -> Any:
        address = normalise_address(address)

        def change(txn, account: Account) -> Account:
            if address not in account.addresses:
                raise NotFound(f"{address} is not an address of {account.name}")
            txn.delete(keys.address(address))
            return replace(account, addresses=tuple(a for a in account.addresses if a != address))

        return self._update_account(name, change)

    def set_members(self, name: str, members: list[str]) -> Any:
        normalised = tuple(normalise_address(m) for m in members)

        def change(txn, account: Account) -> Account:
            if account.kind != KIND_GROUP:
                raise InvalidValue(f"{account.name} is not a group")
            return replace(account, members=normalised)

        return self._update_account(name, change)

    def remove_account(self, name: str) -> Any:
        """Delete an account, its addresses and all its mail."""
        released: list[str] = []

        def fn(txn) -> Account:
            account = self._find_account_txn(txn, name)
            if account is None:
                raise NotFound(f"no such account: {name}")
            for address in account.addresses:
                txn.delete(keys.address(address))
            txn.delete(keys.login(account.name.lower()))
            txn.delete(keys.account(account.id))
            for key, _ in list(txn.scan(keys.app_passwords_prefix(account.id))):
                txn.delete(key)
            for key, value in list(txn.scan(keys.API_TOKENS_PREFIX)):
                if unpack(value)["account"] == account.id:
                    txn.delete(key)
            released.extend(self.core.remove_account(txn, account.id))
            return account

        result = self._execute(fn)

        def release(value):
            for blob_id in released:
                self.core.blobs.delete(blob_id)
            return value

        if isinstance(result, Deferred):
            return result.addCallback(lambda v: deferToThread(release, v))
        return release(result)

    # -- aliases ---------------------------------------------------------------------------------
    def add_alias(self, address: str, targets: list[str]) -> Any:
        address = normalise_address(address)
        if not targets:
            raise InvalidValue("an alias needs at least one target address")
        normalised = [normalise_address(t) for t in targets]

        def fn(txn) -> Alias:
            self._claim_address_txn(txn, address, _Target("alias", 0, normalised))
            return Alias(address, tuple(normalised))

        return self._execute(fn)

    def remove_alias(self, address: str) -> Any:
        address = normalise_address(address)

        def fn(txn) -> None:
            data = txn.get(keys.address(address))
            if data is None or _Target.from_bytes(data).kind != "alias":
                raise NotFound(f"no such alias: {address}")
            txn.delete(keys.address(address))

        return self._execute(fn)


def synchronous(value: Any) -> Deferred:
    """Wrap a CLI-mode result so callers written for the server's Deferreds work too."""
    return value if isinstance(value, Deferred) else succeed(value)
