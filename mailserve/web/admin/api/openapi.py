"""The OpenAPI 3.0.3 document of the admin API (``/api/openapi.json``), built from the endpoint
table with the very schemas the requests are checked with.
"""

from __future__ import annotations

from typing import Any

from mailserve.web.admin.api.endpoint import PUBLIC, Endpoint, _path_schema
from mailserve.web.admin.api.payloads import ERROR

_STATUS_TEXT = {200: "OK", 201: "Created", 400: "Malformed request, unknown field or wrong type",
                401: "Authentication required or credentials refused", 403: "Not allowed for this caller",
                404: "No such resource", 405: "Method not allowed", 409: "Conflicts with the current state",
                413: "Request body too large", 415: "Body must be application/json",
                429: "Too many failed authentications from this address", 500: "Internal error",
                503: "This part of the server is not available"}


def build_openapi(table: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of ``table`` (the same schemas the requests are checked with)."""
    from mailserve import __version__

    paths: dict[str, dict[str, Any]] = {}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for e in table:
        op: dict[str, Any] = {"operationId": e.operation_id, "summary": e.summary, "tags": [e.tag]}
        parameters = [{"name": n, "in": "path", "required": True, "schema": _path_schema(e, n)}
                      for n in e.param_names]
        parameters += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in e.query.items()]
        if parameters:
            op["parameters"] = parameters
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {m: {"schema": e.body} for m in e.media_types}}
        responses: dict[str, Any] = {
            str(status): {"description": _STATUS_TEXT[status],
                          "content": {"application/json": {"schema": e.response or {}}}}
            for status in (e.status, *e.also)}
        if e.links:
            responses[str(e.status)]["links"] = {
                target: {"operationId": target, "parameters": parameters} for target, parameters in e.links.items()}
        codes = {400, 405, 500, *e.errors}
        if e.param_names:
            codes.add(404)
        if e.body is not None:
            codes |= {413, 415}
        if e.access != PUBLIC:
            codes |= {401, 403, 429}
            op["security"] = [{"basicAuth": []}, {"bearerAuth": []}]
        else:
            op["security"] = []
        for code in sorted(codes):
            responses[str(code)] = {"description": _STATUS_TEXT[code], "content": error_ref}
        op["responses"] = responses
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "mailserve admin API", "version": __version__,
                 "description": "Administration of a mailserve server. Errors are JSON {\"error\": {\"code\", "
                                "\"message\", \"field\"}}. The web admin uses the same API with a session "
                                "cookie and an X-CSRF-Token header."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic",
                              "description": "Account login and password (or app password); TLS or loopback only."},
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "An API token created with POST /api/tokens."},
            },
        },
        "security": [{"basicAuth": []}, {"bearerAuth": []}],
    }
