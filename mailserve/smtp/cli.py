"""``mailserve queue list|show|retry|delete``: look at and act on the outbound queue.

The commands open the data directory directly, like every administration command (LMDB
allows several processes), so they work whether or not the server runs.  A running server
sees ``retry`` within its poll interval (``mailserve.smtp.queue.POLL_INTERVAL``).
"""

from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import asdict
from typing import Any

from mailserve.smtp.queue import QueueEntry, QueueStore

__all__ = ["add_queue_commands", "cmd_queue"]


def add_queue_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Register ``queue`` under the ``mailserve`` parser (an entry of ``cli._EXTRA_COMMANDS``)."""
    parser = subparsers.add_parser("queue", help="inspect and manage the outbound mail queue")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="list queued messages")
    show = actions.add_parser("show", parents=[common], help="show one message's envelope and recipients")
    show.add_argument("id", type=int)
    retry = actions.add_parser("retry", parents=[common], help="retry now (one message, or --all)")
    retry.add_argument("id", type=int, nargs="?")
    retry.add_argument("--all", action="store_true", help="every queued message")
    delete = actions.add_parser("delete", parents=[common], help="remove a message without notifying anyone")
    delete.add_argument("id", type=int)
    parser.set_defaults(func=cmd_queue)


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _summary(entry: QueueEntry) -> list[str]:
    pending = entry.pending
    return [str(entry.id), _when(entry.created), f"<{entry.mail_from}>", str(entry.size),
            f"{len(pending)}/{len(entry.recipients)}", _when(entry.next_attempt), entry.last_error[:60]]


def _details(entry: QueueEntry) -> str:
    lines = [
        f"id:           {entry.id}",
        f"from:         <{entry.mail_from}>",
        f"size:         {entry.size} bytes",
        f"queued:       {_when(entry.created)}",
        f"attempts:     {entry.attempts}",
        f"next attempt: {_when(entry.next_attempt)}",
    ]
    if entry.envid:
        lines.append(f"envelope id:  {entry.envid}")
    lines.append("recipients:")
    for recipient in entry.recipients:
        reply = f"  ({recipient.reply})" if recipient.reply else ""
        lines.append(f"  {recipient.status:<9} <{recipient.address}>{reply}")
    return "\n".join(lines)


def cmd_queue(args: argparse.Namespace) -> int:
    from mailserve.cli import CommandError, _emit, _open, _table

    stores = _open(args)
    metadata = stores.metadata
    try:
        if args.action == "list":
            entries = metadata.read(QueueStore.list_txn)
            _emit(args, [entry.public() for entry in entries],
                  _table([_summary(e) for e in entries],
                         ["ID", "QUEUED", "FROM", "SIZE", "PENDING", "NEXT ATTEMPT", "LAST ERROR"]))
        elif args.action == "show":
            entry = metadata.read(lambda txn: QueueStore.get_txn(txn, args.id))
            if entry is None:
                raise CommandError(f"no queued message {args.id}; see `mailserve queue list`")
            _emit(args, entry.public(), _details(entry))
        elif args.action == "retry":
            if args.all == (args.id is not None):
                raise CommandError("give a message id or --all")
            now = time.time()

            def retry(txn: Any) -> list[int]:
                ids = [e.id for e in QueueStore.list_txn(txn)] if args.all else [args.id]
                return [i for i in ids if QueueStore.retry_txn(txn, i, now) is not None]

            done = metadata.write_sync(retry)
            if not done and not args.all:
                raise CommandError(f"no queued message {args.id}; see `mailserve queue list`")
            _emit(args, {"retried": done}, f"{len(done)} message(s) will be retried now")
        elif args.action == "delete":
            def delete(txn: Any) -> tuple[QueueEntry | None, bool]:
                entry = QueueStore.get_txn(txn, args.id)
                if entry is None:
                    return None, False
                return entry, QueueStore.remove_txn(txn, entry)

            entry, release = metadata.write_sync(delete)
            if entry is None:
                raise CommandError(f"no queued message {args.id}; see `mailserve queue list`")
            if release:
                stores.blobs.delete(entry.blob_id)
            _emit(args, {"deleted": asdict(entry)["id"]}, f"deleted queued message {entry.id}")
    finally:
        stores.close()
    return 0
