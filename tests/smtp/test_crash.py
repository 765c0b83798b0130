"""kill -9 during a burst of inbound SMTP deliveries: every message that got 250 is stored.

The server runs as a real process (``python -m mailserve.cli serve``); clients send in
parallel with smtplib; the process is SIGKILLed mid-burst, restarted, stopped, and the stores
are then opened directly to find every acknowledged message.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
import threading
import time

from mailserve import cli
from mailserve.config import load_config
from tests.crashload import kill_during_load, restart_serves_and_stop

SENDERS = 6


def write_config(tmp_path) -> str:
    path = tmp_path / "mailserve.toml"
    path.write_text(
        f'[server]\nhostname = "mail.example.test"\ndata_dir = "{tmp_path / "data"}"\n'
        '[server.listener.mx]\nbind = "127.0.0.1:0"\nprotocol = "smtp"\ntls.starttls = false\n'
        '[logging]\nlevel = "warn"\n'
    )
    return str(path)


def start_server(config: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "mailserve.cli", "serve", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"smtp\s+127\.0\.0\.1:(\d+)", line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, int(match.group(1))
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stdout.read()}")


def burst(port: int, acked: list[str], stop: threading.Event, sender: int) -> None:
    n = 0
    while not stop.is_set():
        try:
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
            smtp.ehlo("client.test")
            while not stop.is_set():
                n += 1
                tag = f"crash-{sender}-{n}"
                message = (f"From: s@remote.test\r\nTo: user@example.test\r\nSubject: {tag}\r\n"
                           f"Message-ID: <{tag}@remote.test>\r\n\r\n" + "payload line\r\n" * 50).encode()
                smtp.sendmail("s@remote.test", ["user@example.test"], message)
                acked.append(tag)  # sendmail returned: DATA got 250
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)  # the server died: reconnect until told to stop


def test_acknowledged_messages_survive_sigkill(tmp_path):
    config_path = write_config(tmp_path)
    assert cli.main(["domain", "add", "example.test", "--config", config_path]) == 0
    assert cli.main(["account", "add", "user@example.test", "--address", "user@example.test",
                     "--password", "pw-for-user", "--config", config_path]) == 0
    proc, port = start_server(config_path)
    acked = kill_during_load(proc, port, burst, SENDERS, minimum=150)

    # Restart on the same data: no repair step, and it serves again.
    restart_serves_and_stop(start_server, config_path)

    stores = cli.Stores(load_config(config_path))
    try:
        account = stores.directory.get_account("user@example.test")
        core = stores.core
        inbox = core.find_mailbox(account.id, "INBOX")
        messages = core.get_messages(account.id, [m for _, m in core.mailbox_uids(account.id, inbox.id)])
        subjects = {core.get_parsed(m.blob_id).envelope.subject for m in messages}
        lost = [tag for tag in acked if tag not in subjects]
        assert lost == [], f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"
        for message in messages[:20]:
            assert stores.blobs.get(message.blob_id).startswith(b"Return-Path: <s@remote.test>\r\nReceived: ")
    finally:
        stores.close()
