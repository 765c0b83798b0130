"""Handlers of ``/api/accounts``: accounts, their addresses, quotas and app passwords.

An administrator cannot lock themselves out: changing one's own password, disabling, demoting or
removing oneself is refused here (issue 7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.admin.errors import Conflict
from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _account_param, _d, _own_account_id

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_list_accounts(api: AdminAPI, c: Call) -> Any:
    domain = c.query.get("domain")
    if domain is not None:
        api.admin.get_domain(domain)
    return api.admin.list_accounts(domain)


async def h_add_account(api: AdminAPI, c: Call) -> Any:
    b = c.body
    return await _d(api.admin.add_account(b["name"], b["password"], b.get("addresses", []),
                                          b.get("display_name", ""), b.get("quota_bytes", 0), b.get("role", "user")))


async def h_get_account(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_account(_account_param(api, c))


async def h_patch_account(api: AdminAPI, c: Call) -> Any:
    name = c.params["account"]
    target = api.admin._individual(name)
    b = c.body
    if target.id == c.principal.account_id:
        if "password" in b:
            raise Conflict("change your own password with POST /api/me/password (it asks for the current one)")
        if b.get("enabled") is False or b.get("role") == "user":
            raise Conflict("you cannot disable or demote yourself; ask another administrator")
    result = await _d(api.admin.update_account(
        target.name, display_name=b.get("display_name"), quota_bytes=b.get("quota_bytes"),
        enabled=b.get("enabled"), role=b.get("role"), password=b.get("password")))
    if "password" in b or "enabled" in b or "role" in b:
        api.auth.forget_verified()
        if b.get("enabled") is False or "password" in b:
            api.auth.sessions.drop_account(target.id)
    return result


async def h_remove_account(api: AdminAPI, c: Call) -> Any:
    target = api.admin._individual(c.params["account"])
    if target.id == c.principal.account_id:
        raise Conflict("you cannot remove your own account; ask another administrator")
    result = await _d(api.admin.remove_account(target.name))
    api.auth.forget_verified()
    api.auth.sessions.drop_account(target.id)
    return result


async def h_add_address(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.add_address(c.params["account"], c.body["address"]))


async def h_remove_address(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_address(c.params["account"], c.params["address"]))


async def h_get_quota(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_quota(_account_param(api, c))


async def h_set_quota(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.set_quota(c.params["account"], c.body["bytes_limit"]))


async def h_list_app_passwords(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_app_passwords(_own_account_id(api, c))


async def h_add_app_password(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.create_app_password(_own_account_id(api, c), c.body["label"]))


async def h_remove_app_password(api: AdminAPI, c: Call) -> Any:
    result = await _d(api.admin.revoke_app_password(_own_account_id(api, c), c.params["id"]))
    api.auth.forget_verified()
    return result
