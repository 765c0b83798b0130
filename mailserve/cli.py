"""The ``mailserve`` command: set up, check, run and administer a server.

Administration commands open the data directory directly (LMDB is safe for several
processes), so they work whether or not the server is running.  Each is one call of the
service layer the admin REST API uses (``mailserve.admin.service.AdminService``, in its
synchronous mode), so both check, refuse and answer alike.  Every command that lists or shows takes ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_CONFIG_PATHS = ("etc/mailserve.toml", "/etc/mailserve/mailserve.toml")


class CommandError(Exception):
    """A command that cannot do what was asked; the message says what to type instead."""


def _default_config_path() -> str:
    env = os.environ.get("MAILSERVE_CONFIG")
    if env:
        return env
    for path in DEFAULT_CONFIG_PATHS:
        if os.path.exists(path):
            return path
    return DEFAULT_CONFIG_PATHS[0]


def parse_size(text: str) -> int:
    """``0``, ``5000000``, ``500MB``, ``2GiB``: what ``account quota`` accepts."""
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6,
             "mib": 1 << 20, "g": 10**9, "gb": 10**9, "gib": 1 << 30, "t": 10**12, "tb": 10**12,
             "tib": 1 << 40}
    stripped = text.strip().lower()
    number = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(number):].strip()
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500MB or 2GiB, 0 for unlimited)") from None
    if unit not in units or value < 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500MB or 2GiB, 0 for unlimited)")
    return int(value * units[unit])


# -- opening the data directory ------------------------------------------------------------
class Stores:
    """The stores of a data directory, opened for one CLI command."""

    def __init__(self, config: Any) -> None:
        from mailserve.core.mailcore import MailCore
        from mailserve.directory.directory import Directory
        from mailserve.directory.passwords import PasswordHashing
        from mailserve.storage import open_blob_store, open_metadata_store

        self.config = config
        self.metadata = open_metadata_store(config)
        self.blobs = open_blob_store(config)
        self.core = MailCore(self.metadata, self.blobs)
        self.directory = Directory(
            self.metadata,
            self.core,
            execute=self.metadata.write_sync,
            hashing=PasswordHashing.from_config(config.auth),
        )

    def close(self) -> None:
        self.metadata.close()


def _load(args: argparse.Namespace):
    from mailserve.config import ConfigError, load_config

    path = args.config or _default_config_path()
    if not os.path.exists(path):
        raise CommandError(
            f"no configuration file at {path}; pass --config FILE, or create one with "
            "`mailserve init DIR`"
        )
    try:
        return load_config(path)
    except ConfigError as e:
        raise CommandError("\n".join(str(i) for i in e.issues)) from None


def _open(args: argparse.Namespace) -> Stores:
    return Stores(_load(args))


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _size(n: int) -> str:
    if n == 0:
        return "unlimited"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- init / validate / serve ---------------------------------------------------------------------
def ensure_administrator(directory: Any, name: str = "admin") -> str | None:
    """Create the first administrator if the directory has none; returns its new password."""
    from mailserve.directory.directory import ROLE_ADMIN
    from mailserve.directory.passwords import random_password

    if any(a.role == ROLE_ADMIN for a in directory.list_accounts()):
        return None
    password = random_password()
    directory.add_account(name, password=password, role=ROLE_ADMIN, display_name="Administrator")
    return password


def cmd_init(args: argparse.Namespace) -> int:
    import socket

    from mailserve.config import load_config, render_default_config

    target = os.path.abspath(args.directory)
    config_path = os.path.join(target, "mailserve.toml")
    if os.path.exists(config_path) and not args.force:
        raise CommandError(f"{config_path} already exists; use --force to overwrite the configuration")
    os.makedirs(target, exist_ok=True)
    data_dir = os.path.join(target, "data")
    hostname = args.hostname or socket.getfqdn()
    with open(config_path, "w") as f:
        f.write(render_default_config(data_dir, hostname))
    config = load_config(config_path)
    stores = Stores(config)
    try:
        password = ensure_administrator(stores.directory)
    finally:
        stores.close()
    print(f"configuration written to {config_path}")
    print(f"data directory: {data_dir}")
    if password:
        print(f"administrator: admin  password: {password}")
        print("(the password is shown only now; change it with `mailserve account passwd admin`)")
    print(f"start the server with: twistd -n mailserve --config={config_path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from mailserve.config import ConfigError, load_config

    path = args.config or _default_config_path()
    try:
        load_config(path)
    except ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run in the foreground with our own logging (what the systemd unit and quick start use)."""
    from mailserve.runner import run

    return run(_load(args))


# -- the shared service layer ------------------------------------------------------------------
def _service(stores: Stores) -> Any:
    """The administrative operations of the REST API, in synchronous mode over these stores:
    every admin command below is one call of it, so the CLI and the API cannot disagree."""
    from mailserve.admin.service import AdminService

    return AdminService.for_stores(stores)


def _admin(args: argparse.Namespace, operation: Callable[[Any], Any]) -> Any:
    """Open the data directory, run ``operation(service)`` and close it again."""
    stores = _open(args)
    try:
        return operation(_service(stores))
    finally:
        stores.close()


def _zone_line(record: dict[str, Any]) -> str:
    """A record as a zone file line; TXT values split into 255-octet strings (RFC 1035 §3.3.14)."""
    value = record["value"]
    if record["type"] == "TXT":
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
        value = " ".join(f'"{c}"' for c in chunks)
    line = f"{record['name']} 3600 IN {record['type']} {value}"
    purpose = record.get("purpose")
    return f"{line}  ; {purpose}" if purpose else line


# -- domains ----------------------------------------------------------------------------------
def cmd_domain(args: argparse.Namespace) -> int:
    if args.action == "add":
        domain = _admin(args, lambda a: a.add_domain(args.name, args.description or ""))
        _emit(args, domain, f"added domain {domain['name']}")
    elif args.action == "list":
        domains = _admin(args, lambda a: a.list_domains())
        _emit(args, domains, _table([[d["name"], d["catch_all"] or "-", d["description"]] for d in domains],
                                    ["DOMAIN", "CATCH-ALL", "DESCRIPTION"]))
    elif args.action == "show":
        domain = _admin(args, lambda a: a.get_domain(args.name))
        _emit(args, domain, "\n".join([
            f"domain:    {domain['name']}",
            f"catch-all: {domain['catch_all'] or '-'}",
            f"accounts:  {', '.join(domain['accounts']) or '-'}",
            f"groups:    {', '.join(domain['groups']) or '-'}",
            f"aliases:   {', '.join(domain['aliases']) or '-'}",
        ]))
    elif args.action == "remove":
        removed = _admin(args, lambda a: a.remove_domain(args.name, force=args.force))
        _emit(args, removed, f"removed domain {removed['removed']}")
    elif args.action == "catch-all":
        domain = _admin(args, lambda a: a.set_catch_all(args.name, args.address or None))
        _emit(args, domain, f"catch-all of {domain['name']}: {domain['catch_all'] or 'none'}")
    return 0


# -- accounts ---------------------------------------------------------------------------------
def _read_password(args: argparse.Namespace) -> str:
    """The new password, from --password-stdin, --password or asked twice on the terminal
    (the service layer checks its length, as for the API)."""
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if getattr(args, "password", None):
        return args.password
    import getpass

    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise CommandError("the passwords differ; nothing changed")
    return password


def _account_text(account: dict[str, Any]) -> str:
    quota = account["quota"]
    return "\n".join([
        f"account:   {account['name']} (id {account['id']})",
        f"kind:      {account['kind']}, role {account['role']}, {'enabled' if account['enabled'] else 'DISABLED'}",
        f"name:      {account['display_name'] or '-'}",
        f"addresses: {', '.join(account['addresses']) or '-'}",
        (f"quota:     {_size(quota['bytes_used'])} used of {_size(quota['bytes_limit'])}"
         f" ({quota['messages_used']} messages)"),
    ])


def cmd_account(args: argparse.Namespace) -> int:
    name = getattr(args, "name", None)
    if args.action == "add":
        password = _read_password(args)
        account = _admin(args, lambda a: a.add_account(
            args.name, password, args.address or [], args.display_name or "", args.quota or 0,
            "admin" if args.admin else "user"))
        _emit(args, account, f"added account {account['name']}")
    elif args.action == "list":
        accounts = _admin(args, lambda a: a.list_accounts(args.domain))
        _emit(args, accounts, _table([[a["name"], a["role"], "yes" if a["enabled"] else "no",
                                       ", ".join(a["addresses"]) or "-", _size(a["quota_bytes"])]
                                      for a in accounts], ["ACCOUNT", "ROLE", "ENABLED", "ADDRESSES", "QUOTA"]))
    elif args.action == "show":
        account = _admin(args, lambda a: a.get_account(name))
        _emit(args, account, _account_text(account))
    elif args.action == "remove":
        removed = _admin(args, lambda a: a.remove_account(name))
        _emit(args, removed, f"removed account {removed['removed']} and its mail")
    elif args.action == "passwd":
        password = _read_password(args)
        updated = _admin(args, lambda a: a.set_password(name, password))
        _emit(args, updated, f"password of {updated['updated']} changed")
    elif args.action == "quota":
        quota = _admin(args, lambda a: a.set_quota(name, args.size))
        _emit(args, quota, f"quota of {name}: {_size(quota['bytes_limit'])}")
    elif args.action in ("enable", "disable"):
        account = _admin(args, lambda a: a.update_account(name, enabled=args.action == "enable"))
        _emit(args, account, f"{account['name']} {args.action}d")
    elif args.action == "add-address":
        account = _admin(args, lambda a: a.add_address(name, args.address))
        _emit(args, account, f"{args.address} now reaches {account['name']}")
    elif args.action == "remove-address":
        account = _admin(args, lambda a: a.remove_address(name, args.address))
        _emit(args, account, f"{args.address} removed from {account['name']}")
    return 0


# -- aliases and groups ---------------------------------------------------------------------------
def cmd_alias(args: argparse.Namespace) -> int:
    if args.action == "add":
        alias = _admin(args, lambda a: a.add_alias(args.address, args.targets))
        _emit(args, alias, f"{alias['address']} -> {', '.join(alias['targets'])}")
    elif args.action == "list":
        aliases = _admin(args, lambda a: a.list_aliases(args.domain))
        _emit(args, aliases, _table([[x["address"], ", ".join(x["targets"])] for x in aliases], ["ALIAS", "TARGETS"]))
    elif args.action == "show":
        alias = _admin(args, lambda a: a.get_alias(args.address))
        _emit(args, alias, f"{alias['address']} -> {', '.join(alias['targets'])}")
    elif args.action == "remove":
        removed = _admin(args, lambda a: a.remove_alias(args.address))
        _emit(args, removed, f"removed alias {removed['removed']}")
    return 0


def cmd_group(args: argparse.Namespace) -> int:
    if args.action == "add":
        group = _admin(args, lambda a: a.add_group(args.name, args.address, args.members, args.display_name or ""))
        _emit(args, group, f"added group {group['name']} <{args.address}>")
    elif args.action == "list":
        groups = _admin(args, lambda a: a.list_groups())
        _emit(args, groups, _table([[g["name"], ", ".join(g["addresses"]), ", ".join(g["members"])] for g in groups],
                                   ["GROUP", "ADDRESS", "MEMBERS"]))
    elif args.action == "members":
        group = _admin(args, lambda a: a.set_members(args.name, args.members))
        _emit(args, group, f"members of {group['name']}: {', '.join(group['members'])}")
    elif args.action == "remove":
        removed = _admin(args, lambda a: a.remove_group(args.name))
        _emit(args, removed, f"removed group {removed['removed']}")
    return 0


# -- DKIM keys and DNS records ------------------------------------------------------------------
#: ``--algorithm`` names and the DKIM algorithms they stand for (RFC 6376 §3.3, RFC 8463).
DKIM_ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


def cmd_dkim(args: argparse.Namespace) -> int:
    if args.action == "generate":
        key = _admin(args, lambda a: a.generate_dkim_key(args.domain, args.selector,
                                                         DKIM_ALGORITHMS[args.algorithm]))
        record = key["record"]
        _emit(args, key, "\n".join([
            f"generated {key['algorithm']} key for {key['domain']}, selector {key['selector']}; publish:",
            _zone_line(record),
        ]))
    elif args.action == "list":
        def every_key(service: Any) -> list[dict[str, Any]]:
            domains = [args.domain] if args.domain else [d["name"] for d in service.list_domains()]
            return [key for domain in domains for key in service.list_dkim_keys(domain)]

        found = _admin(args, every_key)
        _emit(args, found, _table([[k["domain"], k["selector"], k["algorithm"]] for k in found],
                                  ["DOMAIN", "SELECTOR", "ALGORITHM"]))
    elif args.action == "remove":
        removed = _admin(args, lambda a: a.remove_dkim_key(args.domain, args.selector))
        _emit(args, removed, f"removed key {args.selector} of {args.domain}")
    return 0


def cmd_dns(args: argparse.Namespace) -> int:
    records = _admin(args, lambda a: a.dns_records(args.domain))
    _emit(args, records, "\n".join(_zone_line(r) for r in records))
    return 0


# -- the parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", help="configuration file (default: $MAILSERVE_CONFIG, "
                        "etc/mailserve.toml, /etc/mailserve/mailserve.toml)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    parser = argparse.ArgumentParser(prog="mailserve", description="mailserve: mail server administration")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="write a configuration, create the data directory and an administrator")
    p.add_argument("directory", help="where to put mailserve.toml and data/")
    p.add_argument("--hostname", help="the server's public host name (default: this machine's FQDN)")
    p.add_argument("--force", action="store_true", help="overwrite an existing configuration")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("validate", parents=[common], help="check a configuration file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("serve", parents=[common], help="run the server in the foreground")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("domain", help="manage domains")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = dsub.add_parser("add", parents=[common])
    x.add_argument("name")
    x.add_argument("--description")
    dsub.add_parser("list", parents=[common])
    x = dsub.add_parser("show", parents=[common])
    x.add_argument("name")
    x = dsub.add_parser("remove", parents=[common])
    x.add_argument("name")
    x.add_argument("--force", action="store_true", help="also remove the domain's accounts' addresses and aliases")
    x = dsub.add_parser("catch-all", parents=[common], help="set (or with no address, clear) the catch-all")
    x.add_argument("name")
    x.add_argument("address", nargs="?")
    p.set_defaults(func=cmd_domain)

    p = sub.add_parser("account", help="manage accounts")
    asub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = asub.add_parser("add", parents=[common])
    x.add_argument("name", help="login name (often the primary address)")
    x.add_argument("--address", "-a", action="append", help="an address of the account (repeatable)")
    x.add_argument("--display-name")
    x.add_argument("--quota", type=parse_size, help="e.g. 2GiB; 0 or absent: unlimited")
    x.add_argument("--admin", action="store_true", help="make the account an administrator")
    x.add_argument("--password", help="the password (prefer --password-stdin: arguments show in ps)")
    x.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    x = asub.add_parser("list", parents=[common])
    x.add_argument("--domain")
    for action in ("show", "remove", "enable", "disable"):
        x = asub.add_parser(action, parents=[common])
        x.add_argument("name")
    x = asub.add_parser("passwd", parents=[common])
    x.add_argument("name")
    x.add_argument("--password")
    x.add_argument("--password-stdin", action="store_true")
    x = asub.add_parser("quota", parents=[common])
    x.add_argument("name")
    x.add_argument("size", type=parse_size, help="e.g. 500MB, 2GiB; 0 for unlimited")
    for action in ("add-address", "remove-address"):
        x = asub.add_parser(action, parents=[common])
        x.add_argument("name")
        x.add_argument("address")
    p.set_defaults(func=cmd_account)

    p = sub.add_parser("alias", help="manage aliases (an address forwarding to others)")
    lsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = lsub.add_parser("add", parents=[common])
    x.add_argument("address")
    x.add_argument("targets", nargs="+", metavar="TARGET")
    x = lsub.add_parser("list", parents=[common])
    x.add_argument("--domain")
    for action in ("show", "remove"):
        x = lsub.add_parser(action, parents=[common])
        x.add_argument("address")
    p.set_defaults(func=cmd_alias)

    p = sub.add_parser("group", help="manage distribution groups")
    gsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = gsub.add_parser("add", parents=[common])
    x.add_argument("name")
    x.add_argument("address")
    x.add_argument("members", nargs="+", metavar="MEMBER")
    x.add_argument("--display-name")
    gsub.add_parser("list", parents=[common])
    x = gsub.add_parser("members", parents=[common], help="replace the member list")
    x.add_argument("name")
    x.add_argument("members", nargs="+", metavar="MEMBER")
    x = gsub.add_parser("remove", parents=[common])
    x.add_argument("name")
    p.set_defaults(func=cmd_group)

    p = sub.add_parser("dkim", help="manage DKIM signing keys")
    ksub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = ksub.add_parser("generate", parents=[common], help="create a signing key and print its DNS record")
    x.add_argument("domain")
    x.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    x.add_argument("--selector", help="default: rsa-<YYYYMM> or ed25519-<YYYYMM>, so keys can be rotated")
    x = ksub.add_parser("list", parents=[common])
    x.add_argument("domain", nargs="?")
    x = ksub.add_parser("remove", parents=[common])
    x.add_argument("domain")
    x.add_argument("selector")
    p.set_defaults(func=cmd_dkim)

    p = sub.add_parser("dns", parents=[common], help="print the DNS records a domain should publish")
    p.add_argument("domain")
    p.set_defaults(func=cmd_dns)

    for extra in _EXTRA_COMMANDS:
        extra(sub, common)
    return parser


def _queue_commands(subparsers, common) -> None:
    from mailserve.smtp.cli import add_queue_commands

    add_queue_commands(subparsers, common)


#: Subcommands that live with their package: ``(subparsers, common parent parser) -> None``.
def _spam_commands(subparsers, common) -> None:
    from mailserve.spam.cli import register

    register(subparsers, common)


_EXTRA_COMMANDS: list = [_queue_commands, _spam_commands]


def main(argv: Sequence[str] | None = None) -> int:
    from mailserve.admin.errors import AdminError
    from mailserve.core.errors import MailError
    from mailserve.directory.directory import DirectoryError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    if not hasattr(args, "config"):
        args.config = None
    try:
        return args.func(args)
    except (CommandError, AdminError, DirectoryError, MailError) as e:
        print(f"mailserve {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
