"""IMAP load benchmark: mailserve against a private Dovecot, same users, same messages, one run.

K concurrent clients (Python ``imaplib`` in threads) each log in, SELECT INBOX, then for a
fixed time pick operations in a fixed mix: FETCH of envelopes and flags over a 50-message
range, FETCH of a full body, STORE of a flag, SEARCH (flag and header keys), and an IDLE
that is entered and left (IDLE churn).  Each round runs on mailserve, then on Dovecot
(A B A B, these machines being noisy); the report gives ops/s, p50/p99 latency per server
and the ratio.  Then, for each size in ``--scale``, a fresh mailbox of that many messages
is filled and the time of SELECT and of ``UID FETCH 1:* (FLAGS)`` is measured on both, to
show how cost grows with mailbox size.

    PYTHONPATH=. python bench/imap_load.py [--clients 8] [--seconds 20] [--messages 500]
                                           [--rounds 2] [--scale 1000,10000,100000]

Needs the ``dovecot-imapd`` package (Dovecot 2.3, run privately from a temp directory as
root; see scripts/install-test-peers).  Both servers get identical messages by APPEND.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import pwd
import random
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

DOMAIN = "example.test"
USER = f"bench@{DOMAIN}"
PASSWORD = "bench-password"
OPERATIONS = ("fetch_envelopes", "fetch_body", "store", "search", "idle")
WEIGHTS = (40, 20, 20, 15, 5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return total


def message(i: int, rng: random.Random) -> bytes:
    words = " ".join(rng.choice(("alpha", "beta", "gamma", "delta", "report", "meeting", "lunch", "budget"))
                     for _ in range(400))
    return (f"From: Sender {i % 37} <sender{i % 37}@{DOMAIN}>\r\nTo: {USER}\r\n"
            f"Subject: {rng.choice(('Report', 'Meeting', 'Lunch', 'Budget'))} number {i}\r\n"
            f"Date: Mon, 7 Feb 2022 21:52:25 +0100\r\nMessage-ID: <bench{i}@{DOMAIN}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{words}\r\n").encode()


class Mailserve:
    name = "mailserve"

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="mailserve-imap-bench-")
        self.config = os.path.join(self.root, "mailserve.toml")
        with open(self.config, "w") as f:
            f.write(f'[server]\nhostname = "mail.{DOMAIN}"\ndata_dir = "{self.root}/data"\n'
                    'max_connections_per_ip = 500\n'
                    '[server.listener.imap]\nbind = "127.0.0.1:0"\nprotocol = "imap"\n'
                    'tls.starttls = false\nallow_plaintext_auth = true\n'
                    '[imap]\nmax_sessions_per_user = 500\n'
                    '[auth]\nargon2_time_cost = 1\nargon2_memory_cost = "64KiB"\nargon2_parallelism = 1\n'
                    '[logging]\nlevel = "warn"\n')
        cli.main(["domain", "add", DOMAIN, "--config", self.config])
        cli.main(["account", "add", USER, "--address", USER, "--password", PASSWORD, "--config", self.config])
        self.start_process()

    def start_process(self) -> None:
        """Start ``mailserve serve`` on the data directory and learn its IMAP port."""
        self.proc = subprocess.Popen([sys.executable, "-m", "mailserve.cli", "serve", "--config", self.config],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.port:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = re.search(r"imap\s+127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
        if not self.port:
            raise RuntimeError("mailserve did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class Dovecot:
    """A private Dovecot 2.3: own config, passwd-file and Maildir under a temp directory."""

    name = "dovecot"

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="dovecot-imap-bench-")
        os.chmod(self.root, 0o755)
        self.port = free_port()
        nobody = pwd.getpwnam("nobody")
        mail = os.path.join(self.root, "mail")
        os.makedirs(mail)
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        with open(os.path.join(self.root, "passwd"), "w") as f:
            f.write(f"{USER}:{{PLAIN}}{PASSWORD}:{nobody.pw_uid}:{nobody.pw_gid}::{mail}/{USER}\n")
        self.config = os.path.join(self.root, "dovecot.conf")
        with open(self.config, "w") as f:
            f.write(f"""base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = always
passdb {{
  driver = passwd-file
  args = {self.root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {self.root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  process_min_avail = 2
}}
service imap {{
  process_limit = 1024
}}
mail_max_userip_connections = 1000
default_process_limit = 1000
""")
        subprocess.run(["dovecot", "-c", self.config], check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", self.root], capture_output=True, text=True, check=False).stdout
        pids = [int(p) for p in out.split()]
        children = []
        for pid in pids:
            kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
            children += [int(p) for p in kids.split()]
        return sorted(set(pids + children))

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", self.config, "stop"], check=False, capture_output=True)
        time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)


def connect(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    client.login(USER, PASSWORD)
    return client


def populate(port: int, mailbox: str, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    client = connect(port)
    if mailbox != "INBOX":
        client.create(mailbox)
    for i in range(count):
        client.append(mailbox, "(\\Seen)" if i % 3 == 0 else None, None, message(i, rng))
    client.logout()


def worker(port: int, seconds: float, exists: int, seed: int, results: list, errors: list) -> None:
    rng = random.Random(seed)
    latencies: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    try:
        client = connect(port)
        client.select("INBOX")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            op = rng.choices(OPERATIONS, WEIGHTS)[0]
            start = rng.randint(1, max(1, exists - 50))
            began = time.perf_counter()
            if op == "fetch_envelopes":
                typ, _ = client.fetch(f"{start}:{start + 49}", "(FLAGS ENVELOPE)")
            elif op == "fetch_body":
                typ, _ = client.fetch(str(start), "(BODY.PEEK[])")
            elif op == "store":
                typ, _ = client.store(str(start), rng.choice(("+FLAGS", "-FLAGS")), "(\\Flagged)")
            elif op == "search":
                typ, _ = client.search(None, rng.choice(("UNSEEN", "FLAGGED", 'SUBJECT "Budget"')))
            else:
                tag = client._new_tag()
                client.send(tag + b" IDLE\r\n")
                client.readline()
                client.send(b"DONE\r\n")
                while not client.readline().startswith(tag):
                    pass
                typ = "OK"
            if typ != "OK":
                raise RuntimeError(f"{op} failed")
            latencies[op].append(time.perf_counter() - began)
        client.logout()
    except Exception as e:  # noqa: BLE001 - reported in the summary
        errors.append(repr(e))
    results.append(latencies)


def load_round(server, clients: int, seconds: float, exists: int) -> dict:
    results: list = []
    errors: list = []
    cpu_before = cpu_seconds(server.pids())
    threads = [threading.Thread(target=worker, args=(server.port, seconds, exists, i, results, errors))
               for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    cpu = cpu_seconds(server.pids()) - cpu_before
    all_latencies = sorted(x for r in results for values in r.values() for x in values)
    ops = len(all_latencies)
    return {
        "ops_per_s": ops / elapsed if elapsed else 0.0,
        "p50_ms": 1000 * all_latencies[len(all_latencies) // 2] if all_latencies else 0.0,
        "p99_ms": 1000 * all_latencies[int(len(all_latencies) * 0.99)] if all_latencies else 0.0,
        "cpu_ms_per_op": 1000 * cpu / ops if ops else 0.0,
        "errors": errors,
    }


def scale_timing(port: int, mailbox: str) -> tuple[float, float]:
    client = connect(port)
    began = time.perf_counter()
    client.select(mailbox)
    select = time.perf_counter() - began
    began = time.perf_counter()
    client.uid("FETCH", "1:*", "(FLAGS)")
    fetch = time.perf_counter() - began
    client.logout()
    return select, fetch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scale", default="1000,10000", help="mailbox sizes for SELECT / UID FETCH timing")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("dovecot"):
        print("needs root and the dovecot-imapd package", file=sys.stderr)
        return 2
    servers = [Mailserve(), Dovecot()]
    try:
        for server in servers:
            began = time.monotonic()
            populate(server.port, "INBOX", args.messages)
            print(f"{server.name}: {args.messages} messages appended in {time.monotonic() - began:.1f}s", flush=True)
        rounds: dict[str, list[dict]] = {s.name: [] for s in servers}
        for round_ in range(1, args.rounds + 1):
            for server in servers:
                result = load_round(server, args.clients, args.seconds, args.messages)
                rounds[server.name].append(result)
                print(f"round {round_} {server.name:9s}: {result['ops_per_s']:7.1f} ops/s  "
                      f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                      f"CPU {result['cpu_ms_per_op']:.2f} ms/op  errors {len(result['errors'])}",
                      flush=True)
                for error in result["errors"][:3]:
                    print("   ", error)
        medians = {name: statistics.median(r["ops_per_s"] for r in results) for name, results in rounds.items()}
        print(f"load: {args.clients} clients x {args.seconds:.0f}s, {args.messages} messages, mix "
              + ", ".join(f"{op} {w}%" for op, w in zip(OPERATIONS, WEIGHTS, strict=True)))
        for name, value in medians.items():
            print(f"median {name}: {value:.1f} ops/s")
        print(f"ratio mailserve/dovecot: {medians['mailserve'] / medians['dovecot']:.2f}")
        for size in (int(s) for s in args.scale.split(",") if s):
            line = [f"{size:>7} messages:"]
            for server in servers:
                populate(server.port, f"Scale{size}", size, seed=size)
                select, fetch = scale_timing(server.port, f"Scale{size}")
                line.append(f"{server.name} SELECT {select * 1000:8.1f} ms, UID FETCH 1:* (FLAGS) {fetch * 1000:8.1f} ms")
            print("  ".join(line), flush=True)
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
