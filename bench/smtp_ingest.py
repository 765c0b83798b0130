"""SMTP ingest benchmark: Postfix's ``smtp-source`` against mailserve and a private Postfix.

Both servers run on 127.0.0.1 in the same run and get the same load, alternately (A B A B),
because these machines are noisy; the report gives each round, the medians and the ratio.

* mailserve: ``mailserve serve`` in a subprocess, one MX listener, data in a temporary
  directory. Its ``250`` means the message is committed to the recipient's mailbox (blob
  fsynced, metadata committed).  Mail authentication and the spam filter are off, as the
  Postfix instance has no such checks (``--filters`` turns them on).  DNS stays on this
  machine: an empty authoritative zone on loopback (``tests/dnsfixture.py``) answers every
  lookup with NXDOMAIN at once, so ``--filters`` measures the checks, not lookup timeouts.
* Postfix: a private instance (``tests/smtp/postfix.py``) delivering to a virtual Maildir. Its
  ``250`` means the message is fsynced into its incoming queue; final delivery happens after.

    PYTHONPATH=. python bench/smtp_ingest.py [--sessions 20] [--messages 2000] [--size 4096] [--rounds 2] [--filters]

Needs root (Postfix's master runs as root) and the ``postfix`` package
(``scripts/install-test-peers``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from mailserve import cli
from tests.smtp.postfix import PrivatePostfix, available

DOMAIN = "example.test"
USER = "user1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (from /proc), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: An empty authoritative DNS server in its own process; prints its port once listening.
EMPTY_ZONE = ("from twisted.internet import reactor; from tests.dnsfixture import DNSFixtureServer; "
              "server = DNSFixtureServer().start(); print(server.port, flush=True); reactor.run()")


class EmptyZone:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", EMPTY_ZONE], stdout=subprocess.PIPE, text=True,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Mailserve:
    def __init__(self, filters: bool = False) -> None:
        self.dns = EmptyZone()
        self.root = tempfile.mkdtemp(prefix="mailserve-bench-")
        self.config = os.path.join(self.root, "mailserve.toml")
        enabled = "true" if filters else "false"
        with open(self.config, "w") as f:
            f.write(f'[server]\nhostname = "mail.{DOMAIN}"\ndata_dir = "{self.root}/data"\n'
                    'max_connections_per_ip = 200\n'
                    '[server.listener.mx]\nbind = "127.0.0.1:0"\nprotocol = "smtp"\ntls.starttls = false\n'
                    # Like the Postfix instance: no sender or content checks unless --filters;
                    # DNS from the empty zone on loopback (NXDOMAIN for every name, at once).
                    f'[mailauth]\nenabled = {enabled}\n[spam]\nenabled = {enabled}\n'
                    f'[dns]\nnameservers = ["127.0.0.1:{self.dns.port}"]\n'
                    '[logging]\nlevel = "warn"\n')
        cli.main(["domain", "add", DOMAIN, "--config", self.config])
        cli.main(["account", "add", f"{USER}@{DOMAIN}", "--address", f"{USER}@{DOMAIN}",
                  "--password", "bench-password", "--config", self.config])
        self.proc = subprocess.Popen([sys.executable, "-m", "mailserve.cli", "serve", "--config", self.config],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.port:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = re.search(r"smtp\s+127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
        if not self.port:
            raise RuntimeError("mailserve did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.dns.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def run_source(port: int, sessions: int, messages: int, size: int) -> float:
    """Seconds ``smtp-source`` takes to have every message accepted."""
    started = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", f"sender@{DOMAIN}", "-t", f"{USER}@{DOMAIN}", f"127.0.0.1:{port}"],
                   check=True, capture_output=True, timeout=3600)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--filters", action="store_true",
                        help="run mailserve with mail authentication and the spam filter on (Postfix has neither)")
    args = parser.parse_args()
    if not available() or not shutil.which("smtp-source"):
        print("needs root and the postfix package (scripts/install-test-peers)", file=sys.stderr)
        return 2
    ours = Mailserve(filters=args.filters)
    postfix = PrivatePostfix(free_port(), virtual_domain=DOMAIN, users=(USER,)).start()
    rates: dict[str, list[float]] = {"mailserve": [], "postfix": []}
    cpu_per_message: list[float] = []
    try:
        for round_ in range(1, args.rounds + 1):
            before = ours.cpu()
            seconds = run_source(ours.port, args.sessions, args.messages, args.size)
            cpu_per_message.append((ours.cpu() - before) / args.messages)
            rates["mailserve"].append(args.messages / seconds)
            seconds = run_source(postfix.port, args.sessions, args.messages, args.size)
            rates["postfix"].append(args.messages / seconds)
            print(f"round {round_}: mailserve {rates['mailserve'][-1]:7.0f} msg/s   "
                  f"postfix {rates['postfix'][-1]:7.0f} msg/s", flush=True)
    finally:
        ours.stop()
        postfix.stop()
    ours_median = statistics.median(rates["mailserve"])
    postfix_median = statistics.median(rates["postfix"])
    print(f"load: {args.sessions} sessions, {args.messages} messages of {args.size} bytes per round")
    print(f"median mailserve: {ours_median:.0f} msg/s ({statistics.median(cpu_per_message) * 1000:.2f} ms CPU/msg)")
    print(f"median postfix:   {postfix_median:.0f} msg/s")
    print(f"ratio mailserve/postfix: {ours_median / postfix_median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
