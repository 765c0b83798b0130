"""The README's first command: ``mailserve serve`` on the shipped ``etc/mailserve.toml``.

It runs from a scratch directory (the config's relative ``data_dir = "var"`` lands there), must
print every listener, the web admin address and the administrator's password, and that password
must log in over IMAP (STARTTLS on the self-signed certificate) and on the admin API.
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAILSERVE = os.path.join(os.path.dirname(sys.executable), "mailserve")


def test_default_config_starts_prints_login_and_the_login_works(tmp_path):
    shutil.copy(os.path.join(ROOT, "etc", "mailserve.toml"), tmp_path / "mailserve.toml")
    proc = subprocess.Popen([MAILSERVE, "serve", "--config", "mailserve.toml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    banner: list[str] = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("administrator login:") or time.monotonic() > deadline:
                break
        text = "".join(banner)
        assert "mailserve is running as localhost" in text, text
        for protocol, port in [("smtp", 2525), ("submission", 2587), ("submission", 2465), ("imap", 2143),
                               ("imap", 2993), ("pop3", 2110), ("pop3", 2995), ("managesieve", 4190),
                               ("http", 8080)]:
            assert re.search(rf"^  {protocol}\s+127\.0\.0\.1:{port}\b", text, re.MULTILINE), (protocol, port, text)
        assert "web admin: http://127.0.0.1:8080/admin" in text
        password = re.search(r"^administrator login: admin / (\S+)", text, re.MULTILINE).group(1)
        assert (tmp_path / "var").is_dir()

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with imaplib.IMAP4("127.0.0.1", 2143, timeout=30) as imap:
            imap.starttls(context)
            assert imap.login("admin", password)[0] == "OK"
            assert imap.select("INBOX")[0] == "OK"

        connection = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
        credentials = base64.b64encode(f"admin:{password}".encode()).decode()
        connection.request("GET", "/api/status", headers={"Authorization": f"Basic {credentials}"})
        reply = connection.getresponse()
        assert reply.status == 200 and b'"hostname"' in reply.read()
        connection.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
