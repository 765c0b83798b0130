"""``mailserve spam``: train the Bayes classifier from files and show what it has learned.

``mailserve spam train --spam|--ham FILES [--account NAME]`` reads single messages
(``.eml``), mbox files (RFC 4155, also gzip-compressed) and directories (every file below
them, so a Maildir's ``cur`` and ``new`` work) and learns each message with the same code
the server uses when a user moves mail into or out of Junk.  It writes through the
metadata store's own locking, so it may run while the server runs.

Register it in :mod:`mailserve.cli` with ``_EXTRA_COMMANDS.append(register)``.
"""

from __future__ import annotations

import argparse
import gzip
import mailbox
import os
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["cmd_spam", "iter_messages", "register"]

#: Messages larger than this are skipped: the filter only reads a prefix anyway.
MAX_MESSAGE_FILE = 64 << 20


class _WallClock:
    """Time for a filter used outside the reactor."""

    @staticmethod
    def seconds() -> float:
        return time.time()


def _read(path: str) -> bytes:
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as compressed:
            return compressed.read(MAX_MESSAGE_FILE * 16 + 1)
    with open(path, "rb") as plain:
        return plain.read(MAX_MESSAGE_FILE * 16 + 1)


def iter_messages(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    """``(where, raw message)`` for every message in ``paths`` (files, mboxes, directories)."""
    for path in paths:
        if os.path.isdir(path):
            for directory, _subdirs, files in sorted(os.walk(path)):
                for name in sorted(files):
                    if not name.startswith("."):
                        yield from iter_messages([os.path.join(directory, name)])
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file or directory: {path}")
        data = _read(path)
        if data.startswith(b"From "):
            yield from _split_mbox(path, data)
        elif len(data) > MAX_MESSAGE_FILE:
            continue
        else:
            yield path, data


def _split_mbox(path: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """Messages of an mbox (mboxrd quoting of ``>From `` lines undone, RFC 4155)."""
    if path.endswith(".gz"):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".mbox") as copy:
            copy.write(data)
            copy.flush()
            yield from _split_mbox(copy.name, b"")
        return
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            raw = box.get_bytes(key)
            if len(raw) <= MAX_MESSAGE_FILE:
                yield f"{path}#{index + 1}", raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    finally:
        box.close()


def _spam_overrides(config: Any) -> Any:
    """The ``[spam]`` table of the configuration, once config.py has one."""
    section = getattr(config, "spam", None)
    return getattr(section, "rules", None)


def cmd_spam(args: argparse.Namespace) -> int:
    from mailserve.cli import CommandError, _emit, _open
    from mailserve.spam.filter import SpamFilter

    stores = _open(args)
    try:
        account_id = None
        if getattr(args, "account", None):
            account_id = stores.directory.get_account(args.account).id
        spam_filter = SpamFilter(stores.metadata, hostname=stores.config.server.hostname,
                                 overrides=_spam_overrides(stores.config), clock=_WallClock())
        if args.action == "status":
            totals = {"global": spam_filter.store.totals(None)}
            if account_id is not None:
                totals[args.account] = spam_filter.store.totals(account_id)
            value = {name: {"spam": t.spam, "ham": t.ham} for name, t in totals.items()}
            text = "\n".join(f"{name}: {t.spam} spam, {t.ham} ham learned" for name, t in totals.items())
            _emit(args, value, text)
            return 0
        counts = {"learned": 0, "relearned": 0, "already": 0}
        try:
            for _where, raw in iter_messages(args.files):
                outcome = spam_filter.train_sync(account_id, raw, args.is_spam)
                counts[outcome.status] += 1
        except (FileNotFoundError, PermissionError, IsADirectoryError, mailbox.Error) as exc:
            raise CommandError(str(exc)) from None
        kind = "spam" if args.is_spam else "ham"
        _emit(args, {"class": kind, **counts},
              f"{counts['learned']} learned, {counts['relearned']} relearned, "
              f"{counts['already']} already known as {kind}")
        return 0
    finally:
        stores.close()


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``mailserve spam ...`` to the command parser (an ``_EXTRA_COMMANDS`` entry)."""
    parser = sub.add_parser("spam", help="train and inspect the spam filter")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", parents=[common], help="learn messages as spam or as ham")
    kind = train.add_mutually_exclusive_group(required=True)
    kind.add_argument("--spam", dest="is_spam", action="store_true", help="the files hold spam")
    kind.add_argument("--ham", dest="is_spam", action="store_false", help="the files hold wanted mail")
    train.add_argument("files", nargs="+", metavar="FILE", help="message files, mbox files (.gz too) or directories")
    train.add_argument("--account", help="also train this account's own database")
    status = actions.add_parser("status", parents=[common], help="how many messages were learned")
    status.add_argument("--account", help="also show this account's database")
    parser.set_defaults(func=cmd_spam)
