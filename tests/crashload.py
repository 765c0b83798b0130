"""Kill a server with SIGKILL in the middle of a load, and start it again on the same data.

The crash tests of SMTP delivery and of the outbound queue differ only in what they send and
what they check afterwards; the part that makes the crash happens here once.
"""

from __future__ import annotations

import signal
import smtplib
import subprocess
import threading
import time
from collections.abc import Callable

#: ``burst(port, acked, stop, sender)``: send until ``stop`` is set, appending to ``acked``
#: the tag of every message the server acknowledged.
Burst = Callable[[int, list, threading.Event, int], None]


def kill_during_load(proc: subprocess.Popen, port: int, burst: Burst, senders: int, minimum: int) -> list[str]:
    """Run ``senders`` bursts until ``minimum`` messages are acknowledged, then SIGKILL ``proc``.

    Returns the tags of every acknowledged message; asserts the kill and the minimum.
    """
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=burst, args=(port, acked, stop, i)) for i in range(senders)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < minimum and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= minimum
    return acked


def restart_serves_and_stop(start_server: Callable[[str], tuple[subprocess.Popen, int]], config_path: str) -> None:
    """Start again on the same data (no repair step), check it answers SMTP, stop it cleanly."""
    proc, port = start_server(config_path)
    try:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
        assert smtp.noop()[0] == 250
        smtp.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
