"""Handlers of ``/api/queue``: the outbound queue, where this server has one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

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
    entries = await _d(api.admin.list_queue())
    return [_queue_view(e) for e in entries]


async def h_queue_show(api: AdminAPI, c: Call) -> Any:
    return _queue_view(await _d(api.admin.show_queued(c.params["id"])))


async def h_queue_retry(api: AdminAPI, c: Call) -> Any:
    await _d(api.admin.retry_queued(c.params["id"]))
    return {"updated": str(c.params["id"])}


async def h_queue_delete(api: AdminAPI, c: Call) -> Any:
    await _d(api.admin.delete_queued(c.params["id"]))
    return {"removed": str(c.params["id"])}
