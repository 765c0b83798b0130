"""kill -9 during a burst of submissions for remote recipients: every message that got 250 is
in the outbound queue after restart, with its recipient still pending.

The server runs as a real process (``python -m mailserve.cli serve``) with a smarthost that
is down, so everything it accepts stays queued; the stores are opened directly at the end.
"""

from __future__ import annotations

import queue
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time

from mailserve import cli
from mailserve.config import load_config
from mailserve.smtp.queue import QueueStore
from tests.crashload import kill_during_load, restart_serves_and_stop

SENDERS = 4


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path) -> str:
    path = tmp_path / "mailserve.toml"
    path.write_text(
        f'[server]\nhostname = "mail.example.test"\ndata_dir = "{tmp_path / "data"}"\n'
        '[server.listener.submission]\nbind = "127.0.0.1:0"\nprotocol = "submission"\n'
        'tls.starttls = false\nallow_plaintext_auth = true\n'
        f'[smtp]\nrelay_host = "127.0.0.1"\nrelay_port = {unused_port()}\nrelay_tls = "none"\n'
        'retry_initial = "10m"\n'
        '[auth]\nargon2_time_cost = 1\nargon2_memory_cost = "64KiB"\nargon2_parallelism = 1\n'
        '[logging]\nlevel = "warn"\n'
    )
    return str(path)


def start_server(config: str) -> tuple[subprocess.Popen, int]:
    """Start ``mailserve serve``; the submission port is read from its start banner."""
    proc = subprocess.Popen([sys.executable, "-m", "mailserve.cli", "serve", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # keeps the pipe from filling, and never blocks the test
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True).start()
    output = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if not line:
            break
        output.append(line)
        match = re.search(r"submission\s+127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match.group(1))
    proc.kill()
    raise AssertionError("server did not start: " + "".join(output))


def burst(port: int, acked: list[str], stop: threading.Event, sender: int) -> None:
    n = 0
    while not stop.is_set():
        try:
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
            smtp.ehlo("laptop.test")
            smtp.login("user@example.test", "pw-for-user")
            while not stop.is_set():
                n += 1
                tag = f"queued-{sender}-{n}"
                message = (f"From: user@example.test\r\nTo: dest@elsewhere.test\r\nSubject: {tag}\r\n\r\n"
                           + "payload line\r\n" * 50).encode()
                smtp.sendmail("user@example.test", ["dest@elsewhere.test"], message)
                acked.append(tag)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


def test_queued_messages_survive_sigkill(tmp_path):
    config_path = write_config(tmp_path)
    assert cli.main(["domain", "add", "example.test", "--config", config_path]) == 0
    assert cli.main(["account", "add", "user@example.test", "--address", "user@example.test",
                     "--password", "pw-for-user", "--config", config_path]) == 0
    proc, port = start_server(config_path)
    acked = kill_during_load(proc, port, burst, SENDERS, minimum=100)

    # Restart on the same data (the queue tries the smarthost, which is still down), then stop.
    restart_serves_and_stop(start_server, config_path)

    stores = cli.Stores(load_config(config_path))
    try:
        entries = stores.metadata.read(QueueStore.list_txn)
        subjects = {}
        for entry in entries:
            message = stores.blobs.get(entry.blob_id)
            tag = message.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
            subjects[tag] = entry
        lost = [tag for tag in acked if tag not in subjects]
        assert lost == [], f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"
        for tag in acked:
            entry = subjects[tag]
            assert entry.mail_from == "user@example.test"
            assert [(r.address, r.status) for r in entry.recipients] == [("dest@elsewhere.test", "pending")]
    finally:
        stores.close()
