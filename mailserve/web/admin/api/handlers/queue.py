"""Handlers of ``/api/queue``: the outbound queue, where this server has one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailserve.admin.errors import NotFound
from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _d

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


def _queue_view(entry: Any) -> dict[str, Any]:
    public = getattr(entry, "public", None)
    if callable(public):
        return public()
    from dataclasses import asdict, is_dataclass

    if is_dataclass(entry):
        return json.loads(json.dumps(asdict(entry), default=str))
    return dict(entry)


async def h_queue_list(api: AdminAPI, c: Call) -> Any:
    entries = await _d(api.admin.outbound_queue().list())
    return [_queue_view(e) for e in entries]


async def h_queue_show(api: AdminAPI, c: Call) -> Any:
    entry = await _d(api.admin.outbound_queue().show(c.params["id"]))
    if entry is None:
        raise NotFound(f"no queued message {c.params['id']}")
    return _queue_view(entry)


async def h_queue_retry(api: AdminAPI, c: Call) -> Any:
    if await _d(api.admin.outbound_queue().retry(c.params["id"])) is None:
        raise NotFound(f"no queued message {c.params['id']}")
    return {"updated": str(c.params["id"])}


async def h_queue_delete(api: AdminAPI, c: Call) -> Any:
    if await _d(api.admin.outbound_queue().delete(c.params["id"])) is None:
        raise NotFound(f"no queued message {c.params['id']}")
    return {"removed": str(c.params["id"])}
