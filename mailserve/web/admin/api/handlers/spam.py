"""Handlers of spam training: teaching an account's or the server-wide filter a raw message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailserve.web.admin.api.endpoint import Call
from mailserve.web.admin.api.handlers.common import _account_param, _d, _own_account_id

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


async def h_train_account(api: AdminAPI, c: Call) -> Any:
    account_id = _own_account_id(api, c)
    result = await _d(api.admin.train_spam(account_id, c.body, c.params["kind"] == "spam"))
    return {"account": _account_param(api, c)} | result


async def h_train_global(api: AdminAPI, c: Call) -> Any:
    result = await _d(api.admin.train_spam(None, c.body, c.params["kind"] == "spam"))
    return {"account": None} | result
