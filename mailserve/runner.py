"""``mailserve serve``: run one server in the foreground until SIGTERM or SIGINT.

twistd does the same through the plugin; this entry point exists so that the quick start and
the systemd unit get the configured log format and a start banner saying where to log in.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import Logger, globalLogBeginner

log = Logger()


def banner(server: Any) -> str:
    lines = [f"mailserve is running as {server.config.server.hostname}"]
    admin_urls: list[str] = []
    for listener_id, addresses in sorted(server.listening().items()):
        listener = next(x for x in server.config.listeners if x.id == listener_id)
        where = ", ".join(f"{h}:{p}" for h, p in addresses)
        tls = " (TLS)" if listener.tls.implicit else ""
        lines.append(f"  {listener.protocol:<12} {where}{tls}")
        if listener.protocol == "http" and addresses:
            host, port = addresses[0]
            scheme = "https" if listener.tls.implicit else "http"
            shown = f"[{host}]" if ":" in host else host
            admin_urls.append(f"web admin: {scheme}://{shown}:{port}/admin")
    lines.extend(admin_urls)
    if server.initial_admin_password:
        lines.append(
            f"administrator login: admin / {server.initial_admin_password} "
            "(shown once; change it with `mailserve account passwd admin`)"
        )
    return "\n".join(lines)


def run(config: Any) -> int:
    from twisted.internet import reactor

    from mailserve.logsetup import make_observer
    from mailserve.service import MailServer, StartupError

    globalLogBeginner.beginLoggingTo([make_observer(config.logging)], redirectStandardIO=False)
    server = MailServer(config, reactor)
    try:
        server.privilegedStartService()
    except StartupError as e:
        print(f"mailserve: {e}", file=sys.stderr)
        return 1
    exit_code = []

    def start() -> None:
        try:
            server.startService()
        except Exception as e:  # noqa: BLE001 - reported, then we stop
            print(f"mailserve: cannot start: {e}", file=sys.stderr)
            exit_code.append(1)
            reactor.stop()
            return
        print(banner(server), flush=True)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: server.stopService() if server.running else None)
    reactor.run()
    return exit_code[0] if exit_code else 0
