"""Handlers of ``/api/domains``: the domains served, their DNS records and DKIM keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _d

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_list_domains(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_domains()


async def h_add_domain(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.add_domain(c.body["name"], c.body.get("description", "")))


async def h_get_domain(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_domain(c.params["domain"])


async def h_patch_domain(api: AdminAPI, c: Call) -> Any:
    if "catch_all" in c.body:
        await _d(api.admin.set_catch_all(c.params["domain"], c.body["catch_all"] or None))
    return api.admin.get_domain(c.params["domain"])


async def h_remove_domain(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_domain(c.params["domain"], force=c.query.get("force", False)))


async def h_dns(api: AdminAPI, c: Call) -> Any:
    return api.admin.dns_records(c.params["domain"])


async def h_list_dkim(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_dkim_keys(c.params["domain"])


async def h_add_dkim(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.generate_dkim_key(c.params["domain"], c.body.get("selector"),
                                                c.body.get("algorithm", "rsa-sha256")))


async def h_get_dkim(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_dkim_key(c.params["domain"], c.params["selector"])


async def h_remove_dkim(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_dkim_key(c.params["domain"], c.params["selector"]))
