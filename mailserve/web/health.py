"""``/health`` (liveness) and ``/health/ready`` (readiness), as Kubernetes and load balancers probe them.

Liveness says only that the process answers HTTP (the reactor turns): restarting a live process
because a store is slow would make things worse.  Readiness says the server can do its job: the
metadata store answers a read, the blob store's directory is usable, and every configured
listener is bound.  Each check is cheap (one LMDB read, one ``stat``) so probes every few seconds
cost nothing; a failing check answers ``503`` with the reason, which is what orchestrators act on.
"""

from __future__ import annotations

import os
from typing import Any


def liveness() -> tuple[int, dict[str, Any]]:
    return 200, {"status": "ok"}


def readiness(server: Any) -> tuple[int, dict[str, Any]]:
    checks: dict[str, str] = {}
    try:
        server.metadata.read(lambda txn: txn.get(b"dSaccount"))
        checks["metadata"] = "ok"
    except Exception as e:  # noqa: BLE001 - reported as not ready
        checks["metadata"] = f"failed: {e}"
    blob_path = server.config.storage.filesystem.path
    checks["blobs"] = "ok" if os.path.isdir(blob_path) and os.access(blob_path, os.W_OK) else \
        f"failed: {blob_path} is not a writable directory"
    bound = server.listening()
    for listener in server.config.listeners:
        checks[f"listener:{listener.id}"] = "ok" if bound.get(listener.id) else "failed: not listening"
    ready = getattr(server, "running", False) and all(v == "ok" for v in checks.values())
    return (200 if ready else 503), {"status": "ready" if ready else "not ready", "checks": checks}
