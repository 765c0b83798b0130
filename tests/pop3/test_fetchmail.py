"""fetchmail, a real POP3 client, downloading and deleting a populated INBOX.

fetchmail relies on what a serious server gets right: CAPA, STLS and implicit TLS, UIDL for
"keep" mode (it remembers unique-ids in its .fetchids file and fetches only new mail, even
across a server restart), exact sizes, dot-stuffing and DELE at QUIT.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess

import pytest_twisted
from twisted.internet import threads

from tests.e2e.harness import start_server
from tests.pop3.conftest import PASSWORD, sample_message

#: Debian package fetchmail; the test fails (it does not skip) without it.
FETCHMAIL = shutil.which("fetchmail") or "fetchmail"


def run_fetchmail(workdir, port: int, options: str, server_options: str = "") -> tuple[int, str, list[bytes]]:
    """Run fetchmail once; returns its exit status, its output and the messages it delivered."""
    outdir = workdir / "delivered"
    outdir.mkdir(exist_ok=True)
    rc = workdir / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\nset no syslog\n"
        f"poll 127.0.0.1 protocol pop3 port {port} auth password {server_options}\n"
        f'  user "alice@example.test" there with password "{PASSWORD}" is "alice" here {options}\n'
        f'  no rewrite mda "cat > $(mktemp {outdir}/msg.XXXXXX)"\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(workdir), FETCHMAILHOME=str(workdir), LC_ALL="C")
    before = set(outdir.iterdir())
    result = subprocess.run(
        [FETCHMAIL, "-f", str(rc), "--nodetach", "-v"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    delivered = [p.read_bytes() for p in sorted(set(outdir.iterdir()) - before)]
    return result.returncode, result.stdout + result.stderr, delivered


def subjects(messages: list[bytes]) -> list[str]:
    return sorted(email.message_from_bytes(m)["Subject"] for m in messages)


@pytest_twisted.inlineCallbacks
def test_fetchmail_keep_mode_fetches_only_new_mail_across_a_restart_then_deletes(tmp_path, pop3_server):
    workdir = tmp_path / "fetchmail"
    workdir.mkdir()
    # A line starting with a dot checks byte-stuffing end to end.
    yield pop3_server.append(b"Subject: dotted\r\n\r\n.hidden?\r\nvisible\r\n")
    options = "sslproto '' keep"  # cleartext listener with plaintext auth allowed

    status, output, delivered = yield threads.deferToThread(
        run_fetchmail, workdir, pop3_server.port, options, "uidl")
    assert status == 0, output
    assert subjects(delivered) == ["dotted", "message 1", "message 2", "message 3"]
    dotted = next(m for m in delivered if b"Subject: dotted" in m)
    assert b"\n.hidden?\n" in dotted.replace(b"\r\n", b"\n")
    assert pop3_server.inbox_uids() == [1, 2, 3, 4]  # keep: nothing deleted

    # Restart the server; fetchmail's remembered UIDLs must still match (stable unique-ids).
    config = pop3_server.server.config
    yield pop3_server.server.stopService()
    pop3_server.server = start_server(tmp_path, config=config)
    port = pop3_server.server.port("pop3")
    yield pop3_server.append(sample_message(5))

    status, output, delivered = yield threads.deferToThread(run_fetchmail, workdir, port, options, "uidl")
    assert status == 0, output
    assert subjects(delivered) == ["message 5"]

    # Without keep, fetchmail downloads what is new and deletes everything it has seen.
    status, output, delivered = yield threads.deferToThread(
        run_fetchmail, workdir, port, "sslproto '' fetchall", "uidl")
    assert status == 0, output
    assert len(delivered) == 5
    assert pop3_server.inbox_uids() == []


@pytest_twisted.inlineCallbacks
def test_fetchmail_over_stls_downloads_and_deletes(tmp_path, pop3_server):
    workdir = tmp_path / "fetchmail"
    workdir.mkdir()
    options = "sslproto 'tls1.2+' no sslcertck"  # STLS on the listener that refuses cleartext passwords
    status, output, delivered = yield threads.deferToThread(
        run_fetchmail, workdir, pop3_server.plain_port, options)
    assert status == 0, output
    assert "STLS" in output
    assert subjects(delivered) == ["message 1", "message 2", "message 3"]
    assert all(m.endswith(b"line 5 of message " + m.split(b"Subject: message ")[1][:1] + b"\n") for m in delivered)
    assert pop3_server.inbox_uids() == []


@pytest_twisted.inlineCallbacks
def test_fetchmail_over_implicit_tls(tmp_path, pop3_server):
    workdir = tmp_path / "fetchmail"
    workdir.mkdir()
    status, output, delivered = yield threads.deferToThread(
        run_fetchmail, workdir, pop3_server.tls_port, "ssl no sslcertck keep")
    assert status == 0, output
    assert subjects(delivered) == ["message 1", "message 2", "message 3"]
    assert pop3_server.inbox_uids() == [1, 2, 3]
