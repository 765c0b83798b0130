"""Run one test server in its own process:
``python -m tests.web.serverproc DATA_DIR LISTENER... [--sections=JSON]``, the JSON object giving
configuration tables merged over the test defaults (e.g. ``{"smtp": {"relay_port": 1}}``).

Prints one JSON line ``{"ports": {listener: port}, "admin_password": ...}`` once listening, then
serves until SIGTERM.  Browser and schemathesis tests drive it from outside, like a real client,
with no reactor in the test process.  The server is a ``MailServer`` subclass carrying
``ServerMetrics`` (as service.py will once it builds it).
"""

from __future__ import annotations

import json
import pathlib
import signal
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from mailserve.web.metrics import ServerMetrics
from tests.e2e.harness import TestServer, make_config


class MetricsServer(TestServer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = ServerMetrics(self)


def main(argv: list[str]) -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    data_dir = pathlib.Path(argv[0])
    listeners = [a for a in argv[1:] if not a.startswith("--sections=")]
    sections = {"auth": {"failure_delay": 0, "max_failures_per_ip": 100000}}
    for arg in argv[1:]:
        if arg.startswith("--sections="):
            for name, table in json.loads(arg.partition("=")[2]).items():
                sections[name] = {**sections.get(name, {}), **table}
    config = make_config(data_dir, listeners, **sections)
    server = MetricsServer(config, reactor)

    def start() -> None:
        server.startService()
        ports = {name: addrs[0][1] for name, addrs in server.listening().items()}
        print(json.dumps({"ports": ports, "admin_password": server.initial_admin_password}), flush=True)

    def stop(*_: object) -> None:
        reactor.callFromThread(lambda: server.stopService().addBoth(lambda _: reactor.stop()))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(sys.argv[1:])
