"""How fast the core stores messages durably, and how long it holds the reactor thread.

Appends ``--messages`` messages of ``--size`` bytes with ``--concurrency`` in flight (as that
many SMTP sessions would), each acknowledged only after blob fsync and metadata commit, and
reports messages/s, latency percentiles, the longest gap between reactor ticks (the
reactor must stay responsive while the writer thread commits), and how many appends
shared each metadata commit and each round of directory fsyncs (group commit).

    python bench/core_append.py --messages 2000 --concurrency 20 --size 4096
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

from twisted.internet import defer, reactor, task

from mailserve.core.mailcore import MailCore
from mailserve.storage.filesystem_blobs import FilesystemBlobStore
from mailserve.storage.lmdb_store import LMDBMetadataStore


def message(i: int, size: int) -> bytes:
    head = (f"From: a@example.test\r\nTo: b@example.test\r\nSubject: bench {i}\r\n"
            f"Message-ID: <b{i}@example.test>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


@defer.inlineCallbacks
def run(args) -> None:
    tmp = tempfile.mkdtemp(prefix="mailserve-bench-")
    metadata = LMDBMetadataStore(tmp + "/metadata", map_size=2 << 30)
    metadata.start()
    blobs = FilesystemBlobStore(tmp + "/blobs", fsync=not args.no_fsync)
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, 1))
    inbox = core.find_mailbox(1, "INBOX").id

    gaps = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    ticker = task.LoopingCall(tick)
    ticker.start(0.001)
    latencies = []
    counter = iter(range(args.messages))

    @defer.inlineCallbacks
    def worker():
        for i in counter:
            raw = message(i, args.size)
            started = time.perf_counter()
            yield core.append(1, inbox, raw)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    yield defer.gatherResults([worker() for _ in range(args.concurrency)])
    elapsed = time.perf_counter() - started
    ticker.stop()
    metadata.close()
    shutil.rmtree(tmp, ignore_errors=True)
    latencies.sort()
    print(f"appended {args.messages} x {args.size} B, {args.concurrency} in flight, fsync={'off' if args.no_fsync else 'on'}")
    print(f"  {args.messages / elapsed:.0f} messages/s")
    print(f"  latency p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")
    print(f"  reactor tick gap: median {statistics.median(gaps) * 1000:.2f} ms, max {max(gaps) * 1000:.1f} ms")
    # Group commit at work: appends per metadata commit, directories per fsync round.
    print(f"  metadata: {metadata.commits} commits for {metadata.jobs_committed} writes "
          f"({metadata.jobs_committed / max(1, metadata.commits):.1f} per commit and fsync)")
    print(f"  blob directories: {blobs.directory_sync.synced} synced in {blobs.directory_sync.rounds} rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()

    def go():
        d = run(args)
        d.addBoth(lambda r: (reactor.stop(), r)[1])

    reactor.callWhenRunning(go)
    reactor.run()


if __name__ == "__main__":
    main()
