"""Request plumbing of the admin API: matching a request to its endpoint, authenticating and
authorising the caller, checking path, query and JSON body against the endpoint's schemas, and
turning every failure into a JSON error (``{"error": {"code", "message", "field"?}}``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.logger import Logger
from twisted.web.server import Request

from mailserve.admin.errors import AdminError, Forbidden, InvalidRequest, NotFound, TooLarge, classify
from mailserve.web.admin import schema as S
from mailserve.web.admin.api.endpoint import ADMIN, PUBLIC, Call, Endpoint, _path_schema
from mailserve.web.admin.api.openapi import build_openapi
from mailserve.web.admin.api.table import endpoints
from mailserve.web.auth import (
    CSRFRejected,
    InsecureChannel,
    Throttled,
    Unauthenticated,
)
from mailserve.web.http import MAX_API_BODY, error_body, header, json_body


class AdminAPI:
    """Dispatches ``/api/...`` requests for one HTTP listener."""

    log = Logger()

    def __init__(self, server: Any, admin: Any, auth: Any, events: Any, with_queue: bool) -> None:
        self.server = server
        self.admin = admin
        self.auth = auth
        self.events = events
        self.table = endpoints(with_queue)
        self._document: dict[str, Any] | None = None

    # -- dispatch ---------------------------------------------------------------------------
    async def render(self, request: Request) -> bytes:
        try:
            return await self._dispatch(request)
        except AdminError as e:
            return error_body(request, e.status, e.code, str(e), e.field, e.details)
        except Unauthenticated as e:
            request.setHeader(b"WWW-Authenticate", challenge(request))
            return error_body(request, 401, "unauthenticated", str(e))
        except Throttled as e:
            request.setHeader(b"Retry-After", b"900")
            return error_body(request, 429, "throttled", str(e))
        except (InsecureChannel, CSRFRejected) as e:
            return error_body(request, 403, "forbidden", str(e))
        except Exception as e:  # noqa: BLE001 - reported as a 500 with no internals
            mapped = classify(e)
            if mapped is not None:
                return error_body(request, mapped.status, mapped.code, str(mapped), mapped.field, mapped.details)
            self.log.failure("admin API request {method} {path} failed", method=request.method,
                             path=request.path)
            return error_body(request, 500, "internal_error", "internal error; see the server log")

    def _match(self, request: Request) -> tuple[Endpoint, dict[str, str]]:
        raw_path = request.path.decode("ascii", "replace")
        if len(raw_path) > 2048:
            raise InvalidRequest("the path is too long")
        path = raw_path.rstrip("/") if raw_path != "/" else raw_path
        method = request.method.decode("ascii", "replace")
        allowed = []
        for endpoint in self.table:
            match = endpoint.pattern.match(path)
            if match is None:
                continue
            if endpoint.method == method or (method == "HEAD" and endpoint.method == "GET"):
                return endpoint, {k: unquote(v, errors="strict") for k, v in match.groupdict().items()}
            allowed.append(endpoint.method)
        if allowed:
            request.setHeader(b"Allow", ", ".join(sorted(set(allowed))).encode())
            raise _MethodNotAllowed(f"{method} is not allowed here; allowed: {', '.join(sorted(set(allowed)))}")
        raise NotFound(f"no such API resource: {path[:200]}")

    async def _dispatch(self, request: Request) -> bytes:
        try:
            endpoint, raw_params = self._match(request)
        except _MethodNotAllowed as e:
            return error_body(request, 405, "method_not_allowed", str(e))
        except UnicodeDecodeError:
            raise InvalidRequest("the path is not valid UTF-8 after percent-decoding") from None
        principal = None
        if endpoint.access != PUBLIC:
            principal = await self.auth.authenticate(request)
            if principal is None:
                raise Unauthenticated("authentication required: HTTP Basic, a Bearer API token or a web session")
            if endpoint.access == ADMIN and not principal.is_admin:
                raise Forbidden("this needs an administrator")
        params = {}
        for name, value in raw_params.items():
            try:
                params[name] = self._parse_path_value(endpoint, name, value)
            except S.SchemaError as e:
                raise NotFound(f"no such {name}: {value[:100]!r} ({e})") from None
        query = self._parse_query(request, endpoint)
        body = self._parse_body(request, endpoint)
        call = Call(request, principal, params, query, body)
        result = await endpoint.handler(self, call)
        if endpoint.location is not None:
            request.setHeader(b"Location", endpoint.location(params, result).encode("utf-8"))
        return json_body(request, call.status or endpoint.status, result)

    @staticmethod
    def _parse_path_value(endpoint: Endpoint, name: str, value: str) -> Any:
        schema = _path_schema(endpoint, name)
        if schema.get("type") == "integer":
            if not re.fullmatch(r"[0-9]{1,16}", value):
                raise S.SchemaError("expected an integer", name)
            return S.validate(int(value), schema, name)
        return S.validate(value, schema, name)

    @staticmethod
    def _parse_query(request: Request, endpoint: Endpoint) -> dict[str, Any]:
        raw = request.uri.partition(b"?")[2].decode("ascii", "replace")
        try:
            pairs = parse_qs(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
        except ValueError:
            raise InvalidRequest("too many query parameters") from None
        query: dict[str, Any] = {}
        for name, values in pairs.items():
            schema = endpoint.query.get(name)
            if schema is None:
                known = ", ".join(sorted(endpoint.query)) or "none"
                raise InvalidRequest(f"unknown query parameter {name[:50]!r} (known: {known})", field=name)
            if len(values) > 1:
                raise InvalidRequest(f"query parameter {name!r} given more than once", field=name)
            text = values[0]
            kind = schema.get("type")
            value: Any = text
            if kind == "boolean":
                if text not in ("true", "false"):
                    raise InvalidRequest(f"{name}: expected true or false", field=name)
                value = text == "true"
            elif kind == "integer":
                if not re.fullmatch(r"-?[0-9]{1,18}", text):
                    raise InvalidRequest(f"{name}: expected an integer", field=name)
                value = int(text)
            elif kind == "number":
                try:
                    value = float(text)
                except ValueError:
                    raise InvalidRequest(f"{name}: expected a number", field=name) from None
                if not math.isfinite(value):
                    raise InvalidRequest(f"{name}: expected a finite number", field=name)
            try:
                query[name] = S.validate(value, schema, name)
            except S.SchemaError as e:
                raise InvalidRequest(str(e), field=name) from None
        return query

    def _parse_body(self, request: Request, endpoint: Endpoint) -> Any:
        raw = endpoint.media_types[0] != "application/json"
        # A message may be as large as the listener accepts (the site refuses larger ones with 413
        # while they arrive); a JSON document is small.
        limit = max(MAX_API_BODY, self.server.config.http.max_request_size) if raw else MAX_API_BODY
        data = request.content.read(limit + 1) if request.content is not None else b""
        if len(data) > limit:
            raise TooLarge(f"this request body may have at most {limit} bytes")
        if endpoint.body is None:
            if data.strip():
                raise InvalidRequest(f"{endpoint.method} {endpoint.path} takes no request body")
            return None
        content_type = header(request, b"content-type").split(";")[0].strip().lower()
        if content_type not in endpoint.media_types:
            raise _UnsupportedMediaType(f"the request body must be {' or '.join(endpoint.media_types)}")
        if raw:
            return data
        try:
            value = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidRequest("the request body is not UTF-8") from None
        except (ValueError, RecursionError) as e:
            raise InvalidRequest(f"malformed JSON: {e}") from None
        try:
            return S.validate(value, endpoint.body)
        except S.SchemaError as e:
            raise InvalidRequest(str(e), field=e.field) from None

    # -- the OpenAPI document ------------------------------------------------------------------
    def openapi(self) -> dict[str, Any]:
        if self._document is None:
            self._document = build_openapi(self.table)
        return self._document


def challenge(request: Request) -> bytes:
    """The ``WWW-Authenticate`` of a 401 (RFC 9110 §11.6.1).

    Scripts and command-line clients get the Basic challenge (RFC 7617 §2).  The web admin's own
    requests (``X-Requested-With``) get a ``Session`` challenge instead: a Basic challenge would
    make the browser open its own password dialog over the page.
    """
    if header(request, b"x-requested-with"):
        return b'Session realm="mailserve"'
    return b'Basic realm="mailserve", charset="UTF-8"'


class _MethodNotAllowed(Exception):
    pass


class _UnsupportedMediaType(AdminError):
    code = "unsupported_media_type"
    status = 415
