"""Handlers of the server-wide endpoints: the OpenAPI document, status, recent logs, and the
running configuration with its live settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.admin.settings import apply_live_settings, config_view, live_settings_view
from mailserve.web.admin.api.endpoint import Call

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_openapi(api: AdminAPI, c: Call) -> Any:
    return api.openapi()


async def h_status(api: AdminAPI, c: Call) -> Any:
    return api.admin.status()


async def h_logs(api: AdminAPI, c: Call) -> Any:
    q = c.query
    entries = api.events.query(level=q.get("level", "info"), contains=q.get("contains", ""),
                               namespace=q.get("namespace", ""), since=q.get("since", 0.0),
                               after_seq=q.get("after", 0), limit=q.get("limit", 100))
    return [e.public() for e in entries]


async def h_get_config(api: AdminAPI, c: Call) -> Any:
    return {"config": config_view(api.server.config), "live": live_settings_view(api.server.config)}


async def h_patch_config(api: AdminAPI, c: Call) -> Any:
    api.server.config = apply_live_settings(api.server.config, c.body)
    api.log.info("live settings changed by {who}: {keys}", who=c.principal.name, keys=", ".join(sorted(c.body)))
    return {"config": config_view(api.server.config), "live": live_settings_view(api.server.config)}
