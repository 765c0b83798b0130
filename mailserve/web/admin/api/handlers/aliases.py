"""Handlers of ``/api/aliases`` and ``/api/groups``: addresses that forward to other addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _d

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_list_aliases(api: AdminAPI, c: Call) -> Any:
    domain = c.query.get("domain")
    if domain is not None:
        api.admin.get_domain(domain)
    return api.admin.list_aliases(domain)


async def h_add_alias(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.add_alias(c.body["address"], c.body["targets"]))


async def h_get_alias(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_alias(c.params["address"])


async def h_remove_alias(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_alias(c.params["address"]))


async def h_list_groups(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_groups()


async def h_add_group(api: AdminAPI, c: Call) -> Any:
    b = c.body
    return await _d(api.admin.add_group(b["name"], b["address"], b["members"], b.get("display_name", "")))


async def h_get_group(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_group(c.params["group"])


async def h_set_members(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.set_members(c.params["group"], c.body["members"]))


async def h_remove_group(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_group(c.params["group"]))
