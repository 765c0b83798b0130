"""The admin REST API (``/api/...``): one table of endpoints, from which both the request checking
and the OpenAPI 3 document (``/api/openapi.json``) are derived, so the document cannot drift.

Every endpoint is an :class:`Endpoint`: method, path template, who may call it, the JSON Schema
of its body and query, its responses, and an ``async`` handler calling the shared service layer
(:class:`mailserve.admin.service.AdminService`).  Errors are JSON ``{"error": {"code", "message",
"field"?}}``; malformed JSON, unknown fields and wrong types are ``400`` naming the field, and
each operation validates everything before it writes, in one transaction, so nothing is
half-applied.

Authorisation (issue 7): administrators may do everything; any other account may read and change
only itself -- its password (``/api/me/password``), its quota, its app passwords.

The package, one job per module:

- :mod:`.endpoint` -- what an endpoint is (:class:`Endpoint`) and what a handler receives (:class:`Call`);
- :mod:`.payloads` -- the response schemas and the request schemas several endpoints share;
- :mod:`.handlers` -- one module of handlers per resource (domains, accounts, sieve, queue, ...);
- :mod:`.table` -- the endpoint table, with the ``Location`` and OpenAPI links of create operations;
- :mod:`.openapi` -- the OpenAPI document built from the table;
- :mod:`.dispatch` -- :class:`AdminAPI`: matching, authentication, input checking, JSON errors.
"""

from mailserve.web.admin.api.dispatch import AdminAPI, challenge
from mailserve.web.admin.api.endpoint import ADMIN, ANY, PATH_SCHEMAS, PUBLIC, SELF, Call, Endpoint, Handler
from mailserve.web.admin.api.openapi import build_openapi
from mailserve.web.admin.api.table import endpoints

__all__ = [
    "ADMIN",
    "ANY",
    "PATH_SCHEMAS",
    "PUBLIC",
    "SELF",
    "AdminAPI",
    "Call",
    "Endpoint",
    "Handler",
    "build_openapi",
    "challenge",
    "endpoints",
]
