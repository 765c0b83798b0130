"""Real IMAP clients against mailserve: mbsync (isync) and mutt, asserting on their results."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.imap.imapserver import PASSWORD, USER, IMAPTestServer, in_thread, message

# Debian packages isync and mutt are test requirements (see README.rst, "Running the tests").
assert shutil.which("mbsync") and shutil.which("mutt"), "install Debian packages isync and mutt"


@pytest.fixture
def imap(tmp_path):
    server = IMAPTestServer(tmp_path)
    yield server
    server.stop()


def mbsync_config(tmp_path, port: int) -> str:
    maildir = tmp_path / "maildir"
    maildir.mkdir(exist_ok=True)
    path = tmp_path / "mbsyncrc"
    path.write_text(f"""IMAPAccount test
Host 127.0.0.1
Port {port}
User {USER}
Pass "{PASSWORD}"
SSLType None
AuthMechs PLAIN LOGIN
PipelineDepth 10

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
""")
    return str(path)


def run_mbsync(config: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mbsync", "-c", config, "-a"], check=False, capture_output=True, text=True, timeout=60)


def maildir_files(tmp_path, folder: str) -> list[str]:
    base = tmp_path / "maildir" / folder
    return sorted(str(p) for sub in ("cur", "new") for p in (base / sub).iterdir()) if base.exists() else []


@pytest_twisted.inlineCallbacks
def test_mbsync_down_and_up(imap, tmp_path):
    for n in range(1, 6):
        yield imap.deliver(message(n, body=f"mbsync body {n}"), keywords=["\\Seen"] if n == 1 else [])
    yield imap.deliver(message(10), mailbox="Archive")
    config = mbsync_config(tmp_path, imap.port())

    result = yield in_thread(run_mbsync, config)
    assert result.returncode == 0, result.stderr
    inbox = maildir_files(tmp_path, "INBOX")
    assert len(inbox) == 5
    bodies = sorted(Path(p).read_bytes() for p in inbox)
    assert any(b"mbsync body 3" in b for b in bodies)
    assert len(maildir_files(tmp_path, "Archive")) == 1
    seen_local = [p for p in inbox if os.path.basename(p).split(":2,")[-1].find("S") >= 0]
    assert len(seen_local) == 1

    # local changes: flag one message, trash another, add a new one
    flagged = next(p for p in inbox if p not in seen_local)
    os.rename(flagged, flagged.rsplit(":2,", 1)[0] + ":2,F")
    doomed = next(p for p in maildir_files(tmp_path, "INBOX") if ":2,F" not in p and p not in seen_local)
    doomed_subject = next(line for line in Path(doomed).read_bytes().splitlines() if line.startswith(b"Subject:"))
    os.rename(doomed, doomed.rsplit(":2,", 1)[0] + ":2,T")
    new_dir = tmp_path / "maildir" / "INBOX" / "new"
    (new_dir / "1700000000.local.host").write_bytes(message(99, body="written locally"))

    result = yield in_thread(run_mbsync, config)
    assert result.returncode == 0, result.stderr
    account = imap.account_id()
    box = imap.core.find_mailbox(account, "INBOX")
    uids = imap.core.mailbox_uids(account, box.id)
    messages = imap.core.get_messages(account, [m for _, m in uids])
    assert len(messages) == 5  # 5 - 1 deleted + 1 new
    assert sum("\\Flagged" in m.keywords for m in messages) == 1
    raws = []
    for m in messages:
        raw = yield imap.core.read_blob(m.blob_id)
        raws.append(raw)
    assert any(b"written locally" in r for r in raws)
    assert not any(doomed_subject + b"\r\n" in r for r in raws)

    # a third run changes nothing
    result = yield in_thread(run_mbsync, config)
    assert result.returncode == 0, result.stderr
    assert len(imap.core.mailbox_uids(account, box.id)) == 5


@pytest_twisted.inlineCallbacks
def test_mutt_reads_a_message(imap, tmp_path):
    yield imap.deliver(message(1, subject="Greetings from mailserve", body="The secret word is tangerine."))
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""set folder="imap://{USER.replace('@', '%40')}@127.0.0.1:{imap.port()}/"
set spoolfile="+INBOX"
set imap_pass="{PASSWORD}"
set ssl_starttls=no
set ssl_force_tls=no
set imap_authenticators="plain"
set header_cache=""
set message_cachedir=""
set pager_stop=yes
set mbox_type=mbox
set record=""
set move=no
set confirmappend=no
set confirmcreate=no
set quit=yes
set delete=no
""")
    out = tmp_path / "saved.mbox"

    def run():
        env = dict(os.environ, HOME=str(tmp_path), TERM="vt100")
        # mutt wants a terminal: ``script`` gives it a pseudo-terminal.  It opens INBOX over
        # IMAP, copies message 1 to a local mbox (reading the whole message), and quits.
        command = (f"mutt -n -F {muttrc} -e \"push '<copy-message>{out}<enter><quit>'\"")
        return subprocess.run(["script", "-qec", command, "/dev/null"], check=False, capture_output=True,
                              timeout=20, env=env, stdin=subprocess.DEVNULL)

    try:
        result = yield in_thread(run)
    except subprocess.TimeoutExpired as e:
        raise AssertionError((e.stdout or b"")[-3000:].decode(errors="replace")) from None
    assert out.exists(), result.stderr.decode(errors="replace")[-2000:]
    saved = out.read_bytes()
    assert b"Subject: Greetings from mailserve" in saved
    assert b"The secret word is tangerine." in saved
