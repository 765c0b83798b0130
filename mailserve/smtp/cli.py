"""``mailserve queue list|show|retry|delete``: look at and act on the outbound queue.

The commands open the data directory directly, like every administration command (LMDB
allows several processes), so they work whether or not the server runs.  A running server
sees ``retry`` within its poll interval (``mailserve.smtp.queue.POLL_INTERVAL``).  Each action is one
call of ``mailserve.admin.service.AdminService``, as the HTTP API makes it.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import asdict
from typing import Any

from mailserve.smtp.queue import QueueEntry

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
    """Each action is one call of the admin service, the same the HTTP API makes."""
    from mailserve.cli import CommandError, _admin, _emit, _table

    if args.action == "list":
        entries = _admin(args, lambda a: a.list_queue())
        _emit(args, [entry.public() for entry in entries],
              _table([_summary(e) for e in entries],
                     ["ID", "QUEUED", "FROM", "SIZE", "PENDING", "NEXT ATTEMPT", "LAST ERROR"]))
    elif args.action == "show":
        entry = _admin(args, lambda a: a.show_queued(args.id))
        _emit(args, entry.public(), _details(entry))
    elif args.action == "retry":
        if args.all == (args.id is not None):
            raise CommandError("give a message id or --all")
        done = _admin(args, lambda a: a.retry_queued(None if args.all else args.id))
        _emit(args, {"retried": done}, f"{len(done)} message(s) will be retried now")
    elif args.action == "delete":
        entry = _admin(args, lambda a: a.delete_queued(args.id))
        _emit(args, {"deleted": asdict(entry)["id"]}, f"deleted queued message {entry.id}")
    return 0
