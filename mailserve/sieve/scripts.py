"""Each account's Sieve scripts, kept in the metadata store: several per account, at most one active.

ManageSieve (RFC 5804) edits them; delivery asks ``active_script(account)`` for the one to run.
Script texts live under ``keys.sieve_script(account, name)``; the name of the active script is
kept under its own key, ``keys.sieve_active(account)``, outside the range of script names. (Early
versions kept it under the script key of the empty name; that key is still read when the new one
is absent and is removed by the next activation, so no stored state is lost. A script named ""
cannot exist: ``check_script_name`` refuses it, as ``SETACTIVE ""`` means "none", RFC 5804 §2.8.)

Every check that must hold under concurrency (the quota on the number of scripts, "the active
script cannot be deleted", names being unique) is made inside the write transaction that changes
the state, so two ManageSieve sessions of one user cannot together pass a limit.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from twisted.internet.defer import Deferred

from mailserve.core import keys

#: Longest script name accepted (RFC 5804 §1.6 lets servers restrict names; Dovecot allows 256).
MAX_NAME_LENGTH = 128


class ScriptError(Exception):
    """Why a script operation was refused; ``code`` is the RFC 5804 §1.3 response code, if any."""

    code: str | None = None


class NoSuchScript(ScriptError):
    code = "NONEXISTENT"


class ScriptExists(ScriptError):
    code = "ALREADYEXISTS"


class ScriptIsActive(ScriptError):
    code = "ACTIVE"


class InvalidScriptName(ScriptError):
    pass


class TooManyScripts(ScriptError):
    code = "QUOTA/MAXSCRIPTS"


class ScriptTooLarge(ScriptError):
    code = "QUOTA/MAXSIZE"


def _legacy_active_key(account: int) -> bytes:
    """Where early versions kept the active script's name (read, then migrated, never written)."""
    return keys.sieve_script(account, "")


def check_script_name(name: str) -> str:
    """A valid script name (RFC 5804 §1.6), or ``InvalidScriptName``.

    Names are Net-Unicode (RFC 5198): no control characters (U+0000-U+001F, U+007F-U+009F),
    no line or paragraph separators (U+2028, U+2029), and in normalisation form C, so that two
    names that look alike are one name.
    """
    if not name:
        raise InvalidScriptName("script name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidScriptName(f"script name is longer than {MAX_NAME_LENGTH} characters")
    for char in name:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029):
            raise InvalidScriptName("script name contains a control character")
        if 0xD800 <= code <= 0xDFFF:
            raise InvalidScriptName("script name is not valid Unicode")
    return unicodedata.normalize("NFC", name)


class SieveScripts:
    """The Sieve scripts of every account, over an ``IMetadataStore``.

    Reads are synchronous (short read transactions, fine on the reactor); changes return
    Deferreds that fire once committed. Names passed in are checked with ``check_script_name``.
    """

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _scripts_txn(txn: Any, account: int) -> dict[str, bytes]:
        prefix = keys.sieve_scripts_prefix(account)
        legacy_key = _legacy_active_key(account)
        return {
            key[len(prefix):].decode("utf-8"): value
            for key, value in txn.scan(prefix)
            if key != legacy_key
        }

    @staticmethod
    def _active_txn(txn: Any, account: int) -> str | None:
        value = txn.get(keys.sieve_active(account))
        if value is None:
            value = txn.get(_legacy_active_key(account))
        return value.decode("utf-8") if value else None

    @staticmethod
    def _set_active_txn(txn: Any, account: int, name: str | None) -> None:
        txn.delete(_legacy_active_key(account))
        if name:
            txn.put(keys.sieve_active(account), name.encode("utf-8"))
        else:
            txn.delete(keys.sieve_active(account))

    def list_scripts(self, account: int) -> list[tuple[str, bool]]:
        """``(name, is_active)`` of every script, by name (LISTSCRIPTS, RFC 5804 §2.7)."""

        def fn(txn: Any) -> list[tuple[str, bool]]:
            active = self._active_txn(txn, account)
            return [(name, name == active) for name in sorted(self._scripts_txn(txn, account))]

        return self.metadata.read(fn)

    def get_script(self, account: int, name: str) -> str:
        """The text of script ``name``; ``NoSuchScript`` if there is none."""
        name = check_script_name(name)
        value = self.metadata.read(lambda txn: txn.get(keys.sieve_script(account, name)))
        if value is None:
            raise NoSuchScript(f"there is no script named {name!r}")
        return value.decode("utf-8")

    def active_script(self, account: int) -> tuple[str, str] | None:
        """``(name, text)`` of the script to run at delivery for ``account``, or ``None``."""

        def fn(txn: Any) -> tuple[str, str] | None:
            active = self._active_txn(txn, account)
            if active is None:
                return None
            value = txn.get(keys.sieve_script(account, active))
            return (active, value.decode("utf-8")) if value is not None else None

        return self.metadata.read(fn)

    def check_space(self, account: int, name: str, size: int, max_scripts: int, max_size: int) -> None:
        """Raise ``ScriptTooLarge`` or ``TooManyScripts`` if storing ``name`` would break a quota.

        HAVESPACE (RFC 5804 §2.3) asks this before an upload; PUTSCRIPT checks it again in its
        write transaction. Replacing an existing script does not add to the number of scripts.
        """
        name = check_script_name(name)
        if size > max_size:
            raise ScriptTooLarge(f"script is larger than {max_size} bytes")
        self.metadata.read(lambda txn: self._check_count_txn(txn, account, name, max_scripts))

    def _check_count_txn(self, txn: Any, account: int, name: str, max_scripts: int) -> None:
        if txn.get(keys.sieve_script(account, name)) is not None:
            return
        if len(self._scripts_txn(txn, account)) >= max_scripts:
            raise TooManyScripts(f"no more than {max_scripts} scripts may be stored")

    # -- changing ------------------------------------------------------------------------------
    def put_script(
        self, account: int, name: str, text: str, max_scripts: int, max_size: int
    ) -> Deferred:
        """Store (or replace) script ``name``; the caller has compiled ``text`` already."""
        name = check_script_name(name)
        data = text.encode("utf-8")
        if len(data) > max_size:
            raise ScriptTooLarge(f"script is larger than {max_size} bytes")

        def fn(txn: Any) -> None:
            self._check_count_txn(txn, account, name, max_scripts)
            txn.put(keys.sieve_script(account, name), data)

        return self.metadata.write(fn)

    def set_active(self, account: int, name: str) -> Deferred:
        """Make ``name`` the active script; ``""`` leaves none active (RFC 5804 §2.8)."""
        if name:
            name = check_script_name(name)

        def fn(txn: Any) -> None:
            if name and txn.get(keys.sieve_script(account, name)) is None:
                raise NoSuchScript(f"there is no script named {name!r}")
            self._set_active_txn(txn, account, name)

        return self.metadata.write(fn)

    def delete_script(self, account: int, name: str) -> Deferred:
        """Delete a script that is not active (RFC 5804 §2.10)."""
        name = check_script_name(name)

        def fn(txn: Any) -> None:
            if txn.get(keys.sieve_script(account, name)) is None:
                raise NoSuchScript(f"there is no script named {name!r}")
            if self._active_txn(txn, account) == name:
                raise ScriptIsActive("the active script cannot be deleted; deactivate it first")
            txn.delete(keys.sieve_script(account, name))

        return self.metadata.write(fn)

    def rename_script(self, account: int, old: str, new: str) -> Deferred:
        """Rename a script; an active script stays active under its new name (RFC 5804 §2.11.1)."""
        old = check_script_name(old)
        new = check_script_name(new)

        def fn(txn: Any) -> None:
            value = txn.get(keys.sieve_script(account, old))
            if value is None:
                raise NoSuchScript(f"there is no script named {old!r}")
            if old == new:
                return
            if txn.get(keys.sieve_script(account, new)) is not None:
                raise ScriptExists(f"a script named {new!r} already exists")
            txn.delete(keys.sieve_script(account, old))
            txn.put(keys.sieve_script(account, new), value)
            if self._active_txn(txn, account) == old:
                self._set_active_txn(txn, account, new)

        return self.metadata.write(fn)
