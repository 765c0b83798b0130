"""Run by the crash test: append messages through the core as fast as it acknowledges them.

Prints ``ACK <account> <message id> <sha256>`` for every append whose Deferred fired, flushing
each line, so the parent knows exactly what was acknowledged when it sends SIGKILL.
"""

import hashlib
import sys

from twisted.internet import defer, reactor

from mailserve.core.errors import NoSuchMailbox
from mailserve.core.mailcore import MailCore
from mailserve.storage.filesystem_blobs import FilesystemBlobStore
from mailserve.storage.lmdb_store import LMDBMetadataStore


@defer.inlineCallbacks
def main(data_dir: str) -> None:
    metadata = LMDBMetadataStore(data_dir + "/metadata", map_size=256 << 20, reactor=reactor)
    metadata.start()
    core = MailCore(metadata, FilesystemBlobStore(data_dir + "/blobs"), reactor=reactor)
    try:
        inbox = core.find_mailbox(1, "INBOX")
    except NoSuchMailbox:
        metadata.write_sync(lambda txn: core.provision_account(txn, 1))
        inbox = core.find_mailbox(1, "INBOX")
    print("READY", flush=True)
    n = 0

    def one(i: int):
        raw = (f"Subject: crash {i}\r\nMessage-ID: <c{i}@t>\r\n\r\n" + "line\r\n" * (i % 50)).encode()
        d = core.append(1, inbox.id, raw)
        d.addCallback(lambda r: print(f"ACK 1 {r.message} {hashlib.sha256(raw).hexdigest()}", flush=True))
        return d

    while True:
        # Several appends in flight at once, as concurrent SMTP sessions would have.
        yield defer.gatherResults([one(n + k) for k in range(8)])
        n += 8


if __name__ == "__main__":
    reactor.callWhenRunning(main, sys.argv[1])
    reactor.run()
