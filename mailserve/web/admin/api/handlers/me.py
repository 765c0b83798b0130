"""Handlers of ``/api/me``: the authenticated account, and changing one's own password."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _d

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_me(api: AdminAPI, c: Call) -> Any:
    account = api.admin.directory.get_account_by_id(c.principal.account_id)
    out: dict[str, Any] = {"account": api.admin.get_account(account.name) if account.kind == "individual"
                           else account.public(), "is_admin": c.principal.is_admin}
    if c.principal.session is not None:
        out["csrf_token"] = c.principal.session.csrf
    return out


async def h_me_password(api: AdminAPI, c: Call) -> Any:
    result = await _d(api.admin.change_own_password(
        c.principal.account_id, c.body["current_password"], c.body["new_password"]))
    api.auth.forget_verified()
    return result
