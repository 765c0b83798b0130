"""What several handlers share: awaiting a service result, and resolving the account a
``SELF`` endpoint names (a user may only name themselves, issue 7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import maybeDeferred

from mailserve.admin.errors import Forbidden
from mailserve.web.admin.api.endpoint import Call

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


# -- handlers ------------------------------------------------------------------------------------------
async def _d(value: Any) -> Any:
    """Await a service result whether it is a Deferred (server mode) or a value."""
    return await maybeDeferred(lambda: value)


def _account_param(api: AdminAPI, c: Call) -> str:
    """The account a SELF endpoint names; a user may only name themselves.

    A user naming any other account gets 403 whether it exists or not, so the API does not
    tell users which accounts exist.
    """
    name = c.params["account"]
    if c.principal.is_admin:
        return api.admin.directory.get_account(name).name  # NotFound -> 404
    try:
        account = api.admin.directory.get_account(name)
    except Exception:  # noqa: BLE001 - unknown and foreign accounts look the same
        account = None
    if account is None or account.id != c.principal.account_id:
        raise Forbidden("you may only see and change your own account")
    return account.name


def _own_account_id(api: AdminAPI, c: Call) -> int:
    name = _account_param(api, c)
    account = api.admin._individual(name)
    return account.id
