"""Handlers of ``/api/accounts/{account}/sieve``: the ManageSieve script store (RFC 5804)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _d, _own_account_id

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_list_sieve(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_sieve_scripts(_own_account_id(api, c))


async def h_get_sieve(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_sieve_script(_own_account_id(api, c), c.params["script"])


async def h_put_sieve(api: AdminAPI, c: Call) -> Any:
    result = await _d(api.admin.put_sieve_script(_own_account_id(api, c), c.params["script"], c.body["script"],
                                                 activate=c.body.get("activate", False)))
    if result["created"]:
        c.status = 201
    return result["script"]


async def h_activate_sieve(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.activate_sieve_script(_own_account_id(api, c), c.params["script"]))


async def h_deactivate_sieve(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.deactivate_sieve_script(_own_account_id(api, c), c.params["script"]))


async def h_delete_sieve(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.delete_sieve_script(_own_account_id(api, c), c.params["script"]))
