"""kill -9 during a stream of core appends: every acknowledged append survives, stores open clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mailserve.core.mailcore import MailCore
from mailserve.storage.filesystem_blobs import FilesystemBlobStore
from mailserve.storage.lmdb_store import LMDBMetadataStore

HERE = os.path.dirname(__file__)


def run_until_killed(data_dir: str, acks_wanted: int) -> list[tuple[int, int, str]]:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "crash_appender.py"), data_dir],
        stdout=subprocess.PIPE, text=True,
    )
    acked = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout.readline().strip() == "READY"
        for line in proc.stdout:
            if line.startswith("ACK "):
                _, acct, msgid, sha = line.split()
                acked.append((int(acct), int(msgid), sha))
            if len(acked) >= acks_wanted or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        # Acks printed between our last read and the kill count too.
        rest, _ = proc.communicate(timeout=30)
        for line in rest.splitlines():
            if line.startswith("ACK "):
                _, acct, msgid, sha = line.split()
                acked.append((int(acct), int(msgid), sha))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_acknowledged_appends_survive_sigkill(tmp_path):
    data_dir = str(tmp_path)
    total = []
    for round_ in range(2):
        acked = run_until_killed(data_dir, 150 + round_ * 50)
        assert len(acked) >= 150
        total.extend(acked)
        # Reopen as a restarted server would: no repair step, everything acknowledged is there.
        metadata = LMDBMetadataStore(data_dir + "/metadata", map_size=256 << 20)
        blobs = FilesystemBlobStore(data_dir + "/blobs")
        core = MailCore(metadata, blobs)
        for acct, msgid, sha in total:
            message = core.get_message(acct, msgid)
            assert message is not None, f"acknowledged message {msgid} lost"
            assert message.blob_id == sha
            assert blobs.get(sha)  # the bytes are there and readable
            assert core.get_parsed(sha).envelope.subject.startswith("crash ")
        inbox = core.find_mailbox(1, "INBOX")
        uids = core.mailbox_uids(1, inbox.id)
        assert inbox.messages == len(uids) >= len(total)
        metadata.close()
