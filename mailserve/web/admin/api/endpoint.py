"""What an endpoint of the admin API is: its method, path, access rule, schemas and handler, and
the call a handler receives.

The whole API is one table of these (:mod:`.table`); the request checking (:mod:`.dispatch`) and
the OpenAPI document (:mod:`.openapi`) both read it, so the document cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.web.server import Request

from mailserve.web.admin import schema as S
from mailserve.web.admin.api.payloads import SCRIPT_NAME, SPAM_CLASS
from mailserve.web.auth import Principal

if TYPE_CHECKING:
    from mailserve.web.admin.api.dispatch import AdminAPI


ADMIN, SELF, ANY, PUBLIC = "admin", "self", "any", "public"


@dataclass
class Call:
    """One API request as a handler sees it."""

    request: Request
    principal: Principal | None
    params: dict[str, Any]
    query: dict[str, Any]
    body: Any
    #: A handler may answer with another documented success status (``Endpoint.also``).
    status: int | None = None


Handler = Callable[["AdminAPI", Call], Awaitable[Any]]


@dataclass
class Endpoint:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    access: str = ADMIN
    tag: str = "server"
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    response: dict[str, Any] | None = None
    status: int = 200
    #: Other success statuses the handler may choose (e.g. ``201`` when a PUT creates).
    also: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()
    #: The media types of a body: JSON documents, or a raw message (``message/rfc822``).
    media_types: tuple[str, ...] = ("application/json",)
    #: OpenAPI links from this operation's response to the operations that use what it created:
    #: ``{operationId: {path parameter: runtime expression}}`` (OpenAPI 3.0.3 §4.7.20).
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Where the created resource lives (``Location``, RFC 9110 §10.2.2), from the response body.
    location: Callable[[Any, Any], str] | None = None
    pattern: re.Pattern[str] = field(init=False)
    param_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.param_names = re.findall(r"{(\w+)}", self.path)
        regex = re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", self.path)
        self.pattern = re.compile("^" + regex + "$")


PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "domain": S.DOMAIN, "account": S.LOGIN, "address": S.ADDRESS, "group": S.LOGIN, "selector": S.SELECTOR,
    "id": S.ID, "script": SCRIPT_NAME, "kind": SPAM_CLASS,
}


def _path_schema(endpoint: Endpoint, name: str) -> dict[str, Any]:
    return getattr(endpoint, "path_schemas", {}).get(name) or PATH_SCHEMAS[name]
