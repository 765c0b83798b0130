"""Handlers of ``/api/tokens``: bearer API tokens acting as an account."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _d

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_list_tokens(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_api_tokens()


async def h_add_token(api: AdminAPI, c: Call) -> Any:
    b = c.body
    return await _d(api.admin.create_api_token(b["account"], b["label"], b.get("lifetime_seconds", 0)))


async def h_remove_token(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.revoke_api_token(c.params["id"]))
