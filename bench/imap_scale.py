"""How IMAP costs grow with mailbox size: mailserve next to a private Dovecot, same messages.

For each size in ``--sizes`` one INBOX of that many messages is built on both servers
without going through IMAP (mailserve: through ``MailCore`` directly, with the search
indexer fed from the change log as in the server; Dovecot: a Maildir written file by file,
then ``doveadm index``).  Then, alternating mailserve and Dovecot for ``--repeat`` rounds,
each on a fresh connection, it times:

* ``SELECT INBOX``
* ``FETCH 1:* (FLAGS UID)`` (the flag resync every client does)
* ``UID SEARCH BODY ticket42`` (a one-word substring search: matches ``ticket42`` and
  ``ticket420``..``ticket429``; mailserve answers it from its full-text index, Dovecot --
  without an FTS plugin, its default -- by reading the messages)
* ``STATUS INBOX (MESSAGES UIDNEXT UNSEEN)`` (from the authenticated state)

and, after those rounds, ``--repeat`` more of: APPEND ``--appended`` messages (10) on one
connection, then ``SELECT INBOX`` on a fresh one -- the first SELECT after a change, which a
client opening a mailbox that received new mail pays.  It prints the median of each, in milliseconds.

    PYTHONPATH=. python bench/imap_scale.py [--sizes 10000,100000] [--repeat 3]

Needs root and the ``dovecot-imapd`` package (see scripts/install-test-peers).
"""

from __future__ import annotations

import argparse
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time

from imap_load import DOMAIN, USER, Dovecot, Mailserve, connect

WORDS = ("alpha", "beta", "gamma", "delta", "report", "meeting", "lunch", "budget", "invoice", "travel")
NEEDLE = "ticket42"


def scale_message(i: int, rng: random.Random) -> bytes:
    """About 2 KB: headers like real mail, a body of common words and one ``ticket<n>``."""
    words = " ".join(rng.choice(WORDS) for _ in range(250))
    return (f"From: Sender {i % 37} <sender{i % 37}@{DOMAIN}>\r\nTo: {USER}\r\n"
            f"Subject: {rng.choice(('Report', 'Meeting', 'Lunch', 'Budget'))} number {i}\r\n"
            f"Date: Mon, 7 Feb 2022 21:52:25 +0100\r\nMessage-ID: <scale{i}@{DOMAIN}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"{words}\r\nticket{i % 1000}\r\n").encode()


def expected_matches(count: int) -> int:
    return sum(1 for i in range(count) if NEEDLE in f"ticket{i % 1000}")


class ScaleMailserve(Mailserve):
    """A mailserve data directory filled through the core before the server starts."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__()

    def start_process(self) -> None:
        began = time.monotonic()
        subprocess.run([sys.executable, os.path.abspath(__file__), "--fill", self.config, str(self.count)],
                       check=True)
        print(f"  mailserve: {self.count} messages stored and indexed through the core in "
              f"{time.monotonic() - began:.0f}s", flush=True)
        super().start_process()


def fill_with_core(config_path: str, count: int) -> None:
    """Append ``count`` messages to the bench user's INBOX through ``MailCore``.

    Blob fsync is off while building (the bench data is disposable; the timing that
    matters is of the reads).  Appends run concurrently so the writer thread groups them
    into large commits, and the search indexer indexes from the change log as it does in
    the server.
    """
    from twisted.internet import defer, task

    from mailserve.config import load_config
    from mailserve.core.indexer import SearchIndexer
    from mailserve.core.mailcore import MailCore
    from mailserve.directory.directory import Directory
    from mailserve.storage import open_metadata_store, open_search_index
    from mailserve.storage.filesystem_blobs import FilesystemBlobStore

    config = load_config(config_path)

    async def fill(reactor) -> None:
        metadata = open_metadata_store(config, reactor=reactor)
        metadata.start()
        blobs = FilesystemBlobStore(config.storage.filesystem.path, fsync=False)
        core = MailCore(metadata, blobs, reactor=reactor, cache_entries=0)
        index = open_search_index(config)
        indexer = SearchIndexer(core, index, batch_size=2000, delay=0.5)
        indexer.startService()
        account = Directory(metadata, core, execute=metadata.write_sync).get_account(USER).id
        inbox = core.find_mailbox(account, "INBOX").id
        rng = random.Random(count)
        next_message = iter(range(count))

        async def appender() -> None:
            for i in next_message:
                keywords = ["\\Seen"] if i % 3 == 0 else []
                await core.append(account, inbox, scale_message(i, rng), keywords)

        await defer.gatherResults([defer.ensureDeferred(appender()) for _ in range(64)])
        while indexer.pending(account):
            await indexer.flush()
        await indexer.stopService()
        index.close()
        metadata.close()
        os.sync()

    task.react(lambda reactor: defer.ensureDeferred(fill(reactor)))  # exits the (child) process


class ScaleDovecot(Dovecot):
    """A Dovecot Maildir written file by file, then indexed with ``doveadm index``."""

    def __init__(self, count: int) -> None:
        super().__init__()
        began = time.monotonic()
        nobody = pwd.getpwnam("nobody")
        maildir = os.path.join(self.root, "mail", USER, "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        rng = random.Random(count)
        host = socket.gethostname()
        now = int(time.time())
        for i in range(count):
            flags = "S" if i % 3 == 0 else ""
            name = f"{now}.M{i}P{os.getpid()}.{host}:2,{flags}"
            with open(os.path.join(maildir, "cur", name), "wb") as f:
                f.write(scale_message(i, rng))
        for directory, _dirs, files in os.walk(os.path.join(self.root, "mail")):
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), nobody.pw_uid, nobody.pw_gid)
        os.sync()
        subprocess.run(["doveadm", "-c", self.config, "index", "-u", USER, "INBOX"], check=True)
        print(f"  dovecot: {count} messages written and indexed in {time.monotonic() - began:.0f}s", flush=True)


def timed(server, repeat_label: str) -> dict[str, float]:
    """One round of the four operations on fresh connections; milliseconds each."""
    out = {}
    client = connect(server.port)
    began = time.perf_counter()
    typ, data = client.select("INBOX")
    out["SELECT"] = time.perf_counter() - began
    if typ != "OK":
        raise RuntimeError(f"{server.name}: SELECT failed: {data}")
    began = time.perf_counter()
    typ, data = client.fetch("1:*", "(FLAGS UID)")
    out["FETCH 1:* (FLAGS UID)"] = time.perf_counter() - began
    if typ != "OK" or len(data) != server.count:
        raise RuntimeError(f"{server.name}: FETCH returned {len(data)} of {server.count}")
    began = time.perf_counter()
    typ, data = client.uid("SEARCH", "BODY", NEEDLE)
    out[f"UID SEARCH BODY {NEEDLE}"] = time.perf_counter() - began
    found = len(data[0].split()) if typ == "OK" and data and data[0] else 0
    if typ != "OK" or found != expected_matches(server.count):
        raise RuntimeError(f"{server.name}: SEARCH found {found}, expected {expected_matches(server.count)}")
    client.logout()
    client = connect(server.port)
    began = time.perf_counter()
    typ, data = client.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)")
    out["STATUS"] = time.perf_counter() - began
    if typ != "OK" or f"MESSAGES {server.count}".encode() not in data[0]:
        raise RuntimeError(f"{server.name}: STATUS said {data}")
    client.logout()
    return {name: seconds * 1000 for name, seconds in out.items()}


def select_after_append(server, appended: int) -> float:
    """APPEND ``appended`` messages, then time SELECT on a fresh connection (ms)."""
    client = connect(server.port)
    for i in range(appended):
        body = (f"From: bench@{DOMAIN}\r\nTo: {USER}\r\nSubject: new {i}\r\n"
                f"Message-ID: <new{server.count}.{i}@{DOMAIN}>\r\n\r\nJust arrived {i}.\r\n").encode()
        typ, data = client.append("INBOX", None, None, body)
        if typ != "OK":
            raise RuntimeError(f"{server.name}: APPEND failed: {data}")
    server.count += appended
    client.logout()
    client = connect(server.port)
    began = time.perf_counter()
    typ, data = client.select("INBOX")
    elapsed = time.perf_counter() - began
    if typ != "OK" or int(data[0]) != server.count:
        raise RuntimeError(f"{server.name}: SELECT after APPEND said {data}")
    client.logout()
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--appended", type=int, default=10)
    parser.add_argument("--fill", nargs=2, metavar=("CONFIG", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill_with_core(args.fill[0], int(args.fill[1]))
        return 0
    if os.geteuid() != 0 or not shutil.which("dovecot"):
        print("needs root and the dovecot-imapd package", file=sys.stderr)
        return 2
    for size in (int(s) for s in args.sizes.split(",") if s):
        print(f"{size} messages:", flush=True)
        servers = []
        try:
            for factory in (ScaleMailserve, ScaleDovecot):
                server = factory(size)
                server.count = size
                servers.append(server)
            results: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
            for round_ in range(args.repeat):
                for server in servers:
                    for name, ms in timed(server, str(round_)).items():
                        results[server.name].setdefault(name, []).append(ms)
            label = f"SELECT after APPEND of {args.appended}"
            for _round in range(args.repeat):
                for server in servers:
                    results[server.name].setdefault(label, []).append(
                        select_after_append(server, args.appended))
            for name in results[servers[0].name]:
                ours = statistics.median(results["mailserve"][name])
                theirs = statistics.median(results["dovecot"][name])
                print(f"  {name:28s} mailserve {ours:9.1f} ms   dovecot {theirs:9.1f} ms   "
                      f"(first run: {results['mailserve'][name][0]:.1f} / {results['dovecot'][name][0]:.1f})",
                      flush=True)
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
