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
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.web.server import Request

from mailserve.admin.errors import AdminError, Conflict, Forbidden, InvalidRequest, NotFound, classify
from mailserve.admin.events import LEVELS
from mailserve.admin.settings import LIVE_SETTINGS, apply_live_settings, config_view, live_settings_view
from mailserve.web.admin import schema as S
from mailserve.web.auth import (
    CSRFRejected,
    InsecureChannel,
    Principal,
    Throttled,
    Unauthenticated,
)
from mailserve.web.http import MAX_API_BODY, error_body, header, json_body

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


# -- response schemas ------------------------------------------------------------------------------
ERROR = S.obj({"error": S.obj({"code": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": "string"},
                               "line": {"type": "integer", "description": "where a Sieve script is wrong"},
                               "column": {"type": "integer"}}, ("code", "message"))}, ("error",))
REMOVED = S.obj({"removed": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}, ("removed",))
UPDATED = S.obj({"updated": {"type": "string"}}, ("updated",))
DOMAIN_OUT = S.obj({"name": {"type": "string"}, "catch_all": {"type": "string", "nullable": True},
                    "created": {"type": "integer"}, "description": {"type": "string"},
                    "accounts": S.array({"type": "string"}), "groups": S.array({"type": "string"}),
                    "aliases": S.array({"type": "string"})}, ("name", "created", "description"))
QUOTA_OUT = S.obj({"bytes_used": {"type": "integer"}, "bytes_limit": {"type": "integer"},
                   "messages_used": {"type": "integer"}, "messages_limit": {"type": "integer"}},
                  ("bytes_used", "bytes_limit", "messages_used", "messages_limit"))
ACCOUNT_OUT = S.obj({
    "id": {"type": "integer"}, "name": {"type": "string"}, "kind": {"type": "string"},
    "role": {"type": "string", "enum": ["user", "admin"]}, "display_name": {"type": "string"},
    "addresses": S.array({"type": "string"}), "quota_bytes": {"type": "integer"},
    "enabled": {"type": "boolean"}, "members": S.array({"type": "string"}), "created": {"type": "integer"},
    "quota": QUOTA_OUT,
}, ("id", "name", "kind", "role", "addresses", "enabled"))
ALIAS_OUT = S.obj({"address": {"type": "string"}, "targets": S.array({"type": "string"})}, ("address", "targets"))
DNS_RECORD = S.obj({"name": {"type": "string"}, "type": {"type": "string"}, "value": {"type": "string"},
                    "purpose": {"type": "string"}}, ("name", "type", "value"))
DKIM_OUT = S.obj({"domain": {"type": "string"}, "selector": {"type": "string"}, "algorithm": {"type": "string"},
                  "created": {"type": "integer"},
                  "record": S.obj({"name": {"type": "string"}, "type": {"type": "string"},
                                   "value": {"type": "string"}}, ("name", "type", "value"))},
                 ("domain", "selector", "algorithm", "record"))
APP_PASSWORD_OUT = S.obj({"id": {"type": "integer"}, "account": {"type": "integer"}, "label": {"type": "string"},
                          "created": {"type": "integer"},
                          "password": {"type": "string", "description": "shown only in the creation response"}},
                         ("id", "account", "label", "created"))
TOKEN_OUT = S.obj({"id": {"type": "integer"}, "account": {"type": "integer"}, "account_name": {"type": "string"},
                   "label": {"type": "string"}, "created": {"type": "integer"}, "expires": {"type": "integer"},
                   "token": {"type": "string", "description": "shown only in the creation response"}},
                  ("id", "account", "label", "created", "expires"))
LOG_OUT = S.obj({"seq": {"type": "integer"}, "time": {"type": "number"}, "level": {"type": "string"},
                 "namespace": {"type": "string"}, "message": {"type": "string"}},
                ("seq", "time", "level", "message"))
STATUS_OUT = S.obj({
    "version": {"type": "string"}, "hostname": {"type": "string"}, "uptime_seconds": {"type": "number"},
    "domains": {"type": "integer"}, "accounts": {"type": "integer"}, "groups": {"type": "integer"},
    "aliases": {"type": "integer"},
    "listeners": S.array(S.obj({"id": {"type": "string"}, "protocol": {"type": "string"},
                                "tls": {"type": "boolean"}, "addresses": S.array({"type": "string"})})),
}, ("version", "hostname", "uptime_seconds"))
ME_OUT = S.obj({"account": ACCOUNT_OUT, "is_admin": {"type": "boolean"}, "csrf_token": {"type": "string"}},
               ("account", "is_admin"))
QUEUE_RECIPIENT = S.obj({
    "address": {"type": "string"}, "notify": S.array({"type": "string"}),
    "orcpt": {"type": "string", "nullable": True},
    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
    "reply": {"type": "string"}, "remote_mta": {"type": "string"}, "changed": {"type": "number"},
}, ("address", "status"), closed=False)
QUEUE_ENTRY = S.obj({
    "id": {"type": "integer"}, "blob_id": {"type": "string"}, "size": {"type": "integer"},
    "mail_from": {"type": "string", "description": "empty for a delivery status notification"},
    "recipients": S.array(QUEUE_RECIPIENT), "created": {"type": "number"}, "next_attempt": {"type": "number"},
    "attempts": {"type": "integer"}, "envid": {"type": "string", "nullable": True},
    "ret": {"type": "string", "nullable": True}, "smtputf8": {"type": "boolean"}, "body": {"type": "string"},
    "delay_notified": {"type": "boolean"}, "last_error": {"type": "string"}, "arrival": {"type": "number"},
}, ("id", "size", "mail_from", "recipients", "created", "next_attempt", "attempts"), closed=False)
SIEVE_LIST_OUT = S.array(S.obj({"name": {"type": "string"}, "active": {"type": "boolean"}}, ("name", "active")))
SIEVE_OUT = S.obj({"name": {"type": "string"}, "active": {"type": "boolean"}, "script": {"type": "string"}},
                  ("name", "active", "script"))
SIEVE_ACTIVE_OUT = S.obj({"name": {"type": "string"}, "active": {"type": "boolean"}}, ("name", "active"))
TRAIN_OUT = S.obj({"account": {"type": "string", "nullable": True},
                   "class": {"type": "string", "enum": ["spam", "ham"]},
                   "status": {"type": "string", "enum": ["learned", "relearned", "already"],
                              "description": "relearned: the message was learned before as the other class"},
                   "tokens": {"type": "integer"}}, ("account", "class", "status", "tokens"))
#: RFC 5804 §1.6 script names: Net-Unicode without control characters; "/" cannot be in a path segment.
SCRIPT_NAME = {"type": "string", "minLength": 1, "maxLength": 128,
               "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029/]+$",
               "description": "a Sieve script name (RFC 5804 §1.6)"}
SPAM_CLASS = {"type": "string", "enum": ["spam", "ham"]}


def _live_setting_schema(key: str) -> dict[str, Any]:
    from mailserve.config import Config, Duration, Int, Size

    section_name, _, name = key.partition(".")
    section_cls = next(opt.kind.section for n, opt in Config.options() if n == section_name)
    kind = dict(section_cls.options())[name].kind
    if isinstance(kind, Int | Size):
        out: dict[str, Any] = {"type": "integer"}
    elif isinstance(kind, Duration):
        out = {"type": "number"}
    else:  # pragma: no cover - every live setting is numeric today
        out = {"type": "string"}
    if kind.minimum is not None:
        out["minimum"] = kind.minimum
    if kind.maximum is not None:
        out["maximum"] = kind.maximum
    out["description"] = LIVE_SETTINGS[key] + (" (seconds)" if isinstance(kind, Duration) else "")
    return out


def _live_settings_body() -> dict[str, Any]:
    schema = S.obj({key: _live_setting_schema(key) for key in LIVE_SETTINGS})
    schema["minProperties"] = 1
    return schema


# -- handlers ------------------------------------------------------------------------------------------
async def _d(value: Any) -> Any:
    """Await a service result whether it is a Deferred (server mode) or a value."""
    return await maybeDeferred(lambda: value)


async def h_openapi(api: AdminAPI, c: Call) -> Any:
    return api.openapi()


async def h_status(api: AdminAPI, c: Call) -> Any:
    return api.admin.status()


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


async def h_list_accounts(api: AdminAPI, c: Call) -> Any:
    domain = c.query.get("domain")
    if domain is not None:
        api.admin.get_domain(domain)
    return api.admin.list_accounts(domain)


async def h_add_account(api: AdminAPI, c: Call) -> Any:
    b = c.body
    return await _d(api.admin.add_account(b["name"], b["password"], b.get("addresses", []),
                                          b.get("display_name", ""), b.get("quota_bytes", 0), b.get("role", "user")))


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


def _own_account_id(api: AdminAPI, c: Call) -> int:
    name = _account_param(api, c)
    account = api.admin._individual(name)
    return account.id


async def h_list_app_passwords(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_app_passwords(_own_account_id(api, c))


async def h_add_app_password(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.create_app_password(_own_account_id(api, c), c.body["label"]))


async def h_remove_app_password(api: AdminAPI, c: Call) -> Any:
    result = await _d(api.admin.revoke_app_password(_own_account_id(api, c), c.params["id"]))
    api.auth.forget_verified()
    return result


async def h_list_aliases(api: AdminAPI, c: Call) -> Any:
    domain = c.query.get("domain")
    if domain is not None:
        api.admin.get_domain(domain)
    return api.admin.list_aliases(domain)


async def h_add_alias(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.add_alias(c.body["address"], c.body["targets"]))


async def h_get_alias(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_alias(c.params["address"])


async def h_remove_alias(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_alias(c.params["address"]))


async def h_list_groups(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_groups()


async def h_add_group(api: AdminAPI, c: Call) -> Any:
    b = c.body
    return await _d(api.admin.add_group(b["name"], b["address"], b["members"], b.get("display_name", "")))


async def h_get_group(api: AdminAPI, c: Call) -> Any:
    return api.admin.get_group(c.params["group"])


async def h_set_members(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.set_members(c.params["group"], c.body["members"]))


async def h_remove_group(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.remove_group(c.params["group"]))


async def h_list_tokens(api: AdminAPI, c: Call) -> Any:
    return api.admin.list_api_tokens()


async def h_add_token(api: AdminAPI, c: Call) -> Any:
    b = c.body
    return await _d(api.admin.create_api_token(b["account"], b["label"], b.get("lifetime_seconds", 0)))


async def h_remove_token(api: AdminAPI, c: Call) -> Any:
    return await _d(api.admin.revoke_api_token(c.params["id"]))


async def h_logs(api: AdminAPI, c: Call) -> Any:
    q = c.query
    entries = api.events.query(level=q.get("level", "info"), contains=q.get("contains", ""),
                               namespace=q.get("namespace", ""), since=q.get("since", 0.0),
                               after_seq=q.get("after", 0), limit=q.get("limit", 100))
    return [e.public() for e in entries]


async def h_get_config(api: AdminAPI, c: Call) -> Any:
    return {"config": config_view(api.server.config), "live": live_settings_view(api.server.config)}


async def h_patch_config(api: AdminAPI, c: Call) -> Any:
    api.server.config = apply_live_settings(api.server.config, c.body)
    api.log.info("live settings changed by {who}: {keys}", who=c.principal.name, keys=", ".join(sorted(c.body)))
    return {"config": config_view(api.server.config), "live": live_settings_view(api.server.config)}


def _queue_view(entry: Any) -> dict[str, Any]:
    public = getattr(entry, "public", None)
    if callable(public):
        return public()
    from dataclasses import asdict, is_dataclass

    if is_dataclass(entry):
        return json.loads(json.dumps(asdict(entry), default=str))
    return dict(entry)


async def h_queue_list(api: AdminAPI, c: Call) -> Any:
    entries = await _d(api.admin.outbound_queue().list())
    return [_queue_view(e) for e in entries]


async def h_queue_show(api: AdminAPI, c: Call) -> Any:
    entry = await _d(api.admin.outbound_queue().show(c.params["id"]))
    if entry is None:
        raise NotFound(f"no queued message {c.params['id']}")
    return _queue_view(entry)


async def h_queue_retry(api: AdminAPI, c: Call) -> Any:
    if await _d(api.admin.outbound_queue().retry(c.params["id"])) is None:
        raise NotFound(f"no queued message {c.params['id']}")
    return {"updated": str(c.params["id"])}


async def h_queue_delete(api: AdminAPI, c: Call) -> Any:
    if await _d(api.admin.outbound_queue().delete(c.params["id"])) is None:
        raise NotFound(f"no queued message {c.params['id']}")
    return {"removed": str(c.params["id"])}


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


async def h_train_account(api: AdminAPI, c: Call) -> Any:
    account_id = _own_account_id(api, c)
    result = await _d(api.admin.train_spam(account_id, c.body, c.params["kind"] == "spam"))
    return {"account": _account_param(api, c)} | result


async def h_train_global(api: AdminAPI, c: Call) -> Any:
    result = await _d(api.admin.train_spam(None, c.body, c.params["kind"] == "spam"))
    return {"account": None} | result


ACCOUNT_PATH = {"account": S.LOGIN}
DOMAIN_PATH = {"domain": S.DOMAIN}


def endpoints(with_queue: bool) -> list[Endpoint]:
    """Every endpoint of the API (the queue's only where this server has an outbound queue)."""
    E = Endpoint
    table = [
        E("GET", "/api/openapi.json", "getOpenAPI", "This document (OpenAPI 3.0).", h_openapi, PUBLIC, "server",
          response={"type": "object"}),
        E("GET", "/api/status", "getStatus", "Server status: version, uptime, listeners, directory sizes.",
          h_status, ADMIN, "server", response=STATUS_OUT),
        E("GET", "/api/me", "getMe", "The authenticated account (and the CSRF token of a web session).",
          h_me, ANY, "self", response=ME_OUT),
        E("POST", "/api/me/password", "changeMyPassword", "Change your own password (asks for the current one).",
          h_me_password, ANY, "self",
          body=S.obj({"current_password": {"type": "string", "maxLength": 1024}, "new_password": S.PASSWORD},
                     ("current_password", "new_password")),
          response=UPDATED, errors=(403,)),
        # domains
        E("GET", "/api/domains", "listDomains", "Every domain served here.", h_list_domains, ADMIN, "domains",
          response=S.array(DOMAIN_OUT)),
        E("POST", "/api/domains", "addDomain", "Serve a new domain.", h_add_domain, ADMIN, "domains",
          body=S.obj({"name": S.DOMAIN, "description": S.TEXT}, ("name",)), response=DOMAIN_OUT, status=201,
          errors=(409,)),
        E("GET", "/api/domains/{domain}", "getDomain", "A domain with its accounts, groups and aliases.",
          h_get_domain, ADMIN, "domains", response=DOMAIN_OUT, errors=(404,)),
        E("PATCH", "/api/domains/{domain}", "updateDomain", "Set, or clear with \"\", the catch-all address.",
          h_patch_domain, ADMIN, "domains",
          body=S.obj({"catch_all": {"oneOf": [{"type": "string", "enum": [""]}, S.ADDRESS]}}),
          response=DOMAIN_OUT, errors=(404,)),
        E("DELETE", "/api/domains/{domain}", "removeDomain",
          "Stop serving a domain; refused while addresses use it unless force=true.", h_remove_domain, ADMIN,
          "domains", query={"force": {"type": "boolean"}}, response=REMOVED, errors=(404, 409)),
        E("GET", "/api/domains/{domain}/dns", "getDomainDNS", "The DNS records to publish for the domain.",
          h_dns, ADMIN, "domains", response=S.array(DNS_RECORD), errors=(404,)),
        E("GET", "/api/domains/{domain}/dkim", "listDKIMKeys", "The domain's DKIM signing keys.", h_list_dkim,
          ADMIN, "dkim", response=S.array(DKIM_OUT), errors=(404,)),
        E("POST", "/api/domains/{domain}/dkim", "generateDKIMKey",
          "Generate a DKIM key (RSA 2048 or Ed25519) and show its DNS record.", h_add_dkim, ADMIN, "dkim",
          body=S.obj({"selector": S.SELECTOR, "algorithm": {"type": "string", "enum": ["rsa-sha256", "ed25519-sha256"]}}),
          response=DKIM_OUT, status=201, errors=(404, 409)),
        E("GET", "/api/domains/{domain}/dkim/{selector}", "getDKIMKey", "One DKIM key and its DNS record.",
          h_get_dkim, ADMIN, "dkim", response=DKIM_OUT, errors=(404,)),
        E("DELETE", "/api/domains/{domain}/dkim/{selector}", "removeDKIMKey", "Remove a DKIM key.", h_remove_dkim,
          ADMIN, "dkim", response=REMOVED, errors=(404,)),
        # accounts
        E("GET", "/api/accounts", "listAccounts", "Accounts, optionally of one domain.", h_list_accounts, ADMIN,
          "accounts", query={"domain": S.DOMAIN}, response=S.array(ACCOUNT_OUT), errors=(404,)),
        E("POST", "/api/accounts", "addAccount", "Create an account with its mailboxes.", h_add_account, ADMIN,
          "accounts",
          body=S.obj({"name": S.LOGIN, "password": S.PASSWORD, "addresses": S.array(S.ADDRESS, maxItems=100),
                      "display_name": S.TEXT, "quota_bytes": S.QUOTA,
                      "role": {"type": "string", "enum": ["user", "admin"]}}, ("name", "password")),
          response=ACCOUNT_OUT, status=201, errors=(404, 409)),
        E("GET", "/api/accounts/{account}", "getAccount", "An account and its quota use (yours, or any as admin).",
          h_get_account, SELF, "accounts", response=ACCOUNT_OUT, errors=(404,)),
        E("PATCH", "/api/accounts/{account}", "updateAccount",
          "Change display name, quota, enabled, role or password, all at once or none.", h_patch_account, ADMIN,
          "accounts",
          body=S.obj({"display_name": S.TEXT, "quota_bytes": S.QUOTA, "enabled": {"type": "boolean"},
                      "role": {"type": "string", "enum": ["user", "admin"]}, "password": S.PASSWORD}),
          response=ACCOUNT_OUT, errors=(404, 409)),
        E("DELETE", "/api/accounts/{account}", "removeAccount", "Remove an account, its addresses and all its mail.",
          h_remove_account, ADMIN, "accounts", response=REMOVED, errors=(404, 409)),
        E("POST", "/api/accounts/{account}/addresses", "addAccountAddress", "Give an account another address.",
          h_add_address, ADMIN, "accounts", body=S.obj({"address": S.ADDRESS}, ("address",)),
          response=ACCOUNT_OUT, status=201, errors=(404, 409)),
        E("DELETE", "/api/accounts/{account}/addresses/{address}", "removeAccountAddress",
          "Take an address from an account.", h_remove_address, ADMIN, "accounts", response=ACCOUNT_OUT,
          errors=(404,)),
        E("GET", "/api/accounts/{account}/quota", "getQuota", "Quota use and limit (yours, or any as admin).",
          h_get_quota, SELF, "quotas", response=QUOTA_OUT, errors=(404,)),
        E("PUT", "/api/accounts/{account}/quota", "setQuota", "Set the storage limit in bytes (0: unlimited).",
          h_set_quota, ADMIN, "quotas", body=S.obj({"bytes_limit": S.QUOTA}, ("bytes_limit",)),
          response=QUOTA_OUT, errors=(404,)),
        E("GET", "/api/accounts/{account}/app-passwords", "listAppPasswords",
          "App passwords of an account (yours, or any as admin); never the secrets.", h_list_app_passwords,
          SELF, "credentials", response=S.array(APP_PASSWORD_OUT), errors=(404,)),
        E("POST", "/api/accounts/{account}/app-passwords", "createAppPassword",
          "Create an app password for one mail client; the secret is in this response only.",
          h_add_app_password, SELF, "credentials", body=S.obj({"label": S.LABEL}, ("label",)),
          response=APP_PASSWORD_OUT, status=201, errors=(404, 409)),
        E("DELETE", "/api/accounts/{account}/app-passwords/{id}", "revokeAppPassword", "Revoke an app password.",
          h_remove_app_password, SELF, "credentials", response=REMOVED, errors=(404,)),
        # Sieve scripts (the ManageSieve store, RFC 5804)
        E("GET", "/api/accounts/{account}/sieve", "listSieveScripts",
          "Sieve scripts of an account (yours, or any as admin) and which one is active.", h_list_sieve, SELF,
          "sieve", response=SIEVE_LIST_OUT, errors=(404,)),
        E("GET", "/api/accounts/{account}/sieve/{script}", "getSieveScript", "One Sieve script's text.",
          h_get_sieve, SELF, "sieve", response=SIEVE_OUT, errors=(404,)),
        E("PUT", "/api/accounts/{account}/sieve/{script}", "putSieveScript",
          "Store a Sieve script (RFC 5228) after compiling it; a script that does not compile is a 400 "
          "with its line and column, and nothing is stored.", h_put_sieve, SELF, "sieve",
          body=S.obj({"script": {"type": "string", "maxLength": 16 << 20, "description": "the Sieve text"},
                      "activate": {"type": "boolean", "description": "also make it the active script"}},
                     ("script",)),
          response=SIEVE_OUT, also=(201,), errors=(404, 409)),
        E("DELETE", "/api/accounts/{account}/sieve/{script}", "deleteSieveScript",
          "Delete a Sieve script (not the active one: deactivate it first).", h_delete_sieve, SELF, "sieve",
          response=REMOVED, errors=(404, 409)),
        E("PUT", "/api/accounts/{account}/sieve/{script}/active", "activateSieveScript",
          "Make this the script run at delivery (the previous one stops).", h_activate_sieve, SELF, "sieve",
          response=SIEVE_ACTIVE_OUT, errors=(404,)),
        E("DELETE", "/api/accounts/{account}/sieve/{script}/active", "deactivateSieveScript",
          "Run no script at delivery; this must be the active script.", h_deactivate_sieve, SELF, "sieve",
          response=SIEVE_ACTIVE_OUT, errors=(404, 409)),
        # spam training
        E("POST", "/api/accounts/{account}/spam-training/{kind}", "trainAccountSpamFilter",
          "Teach the account's spam filter a raw message (RFC 5322) as spam or ham (yours, or any as admin).",
          h_train_account, SELF, "spam", body={"type": "string", "format": "binary", "minLength": 1},
          media_types=("message/rfc822", "application/octet-stream"), response=TRAIN_OUT, errors=(404, 503)),
        E("POST", "/api/spam-training/{kind}", "trainSpamFilter",
          "Teach the server-wide spam filter a raw message (RFC 5322) as spam or ham.", h_train_global, ADMIN,
          "spam", body={"type": "string", "format": "binary", "minLength": 1},
          media_types=("message/rfc822", "application/octet-stream"), response=TRAIN_OUT, errors=(503,)),
        # aliases and groups
        E("GET", "/api/aliases", "listAliases", "Aliases, optionally of one domain.", h_list_aliases, ADMIN,
          "aliases", query={"domain": S.DOMAIN}, response=S.array(ALIAS_OUT), errors=(404,)),
        E("POST", "/api/aliases", "addAlias", "An address forwarding to other addresses (local or remote).",
          h_add_alias, ADMIN, "aliases",
          body=S.obj({"address": S.ADDRESS, "targets": S.array(S.ADDRESS, minItems=1, maxItems=1000)},
                     ("address", "targets")), response=ALIAS_OUT, status=201, errors=(404, 409)),
        E("GET", "/api/aliases/{address}", "getAlias", "One alias.", h_get_alias, ADMIN, "aliases",
          response=ALIAS_OUT, errors=(404,)),
        E("DELETE", "/api/aliases/{address}", "removeAlias", "Remove an alias.", h_remove_alias, ADMIN, "aliases",
          response=REMOVED, errors=(404,)),
        E("GET", "/api/groups", "listGroups", "Distribution groups.", h_list_groups, ADMIN, "groups",
          response=S.array(ACCOUNT_OUT)),
        E("POST", "/api/groups", "addGroup", "A group: mail to its address reaches every member.", h_add_group,
          ADMIN, "groups",
          body=S.obj({"name": S.LOGIN, "address": S.ADDRESS, "members": S.array(S.ADDRESS, minItems=1, maxItems=1000),
                      "display_name": S.TEXT}, ("name", "address", "members")),
          response=ACCOUNT_OUT, status=201, errors=(404, 409)),
        E("GET", "/api/groups/{group}", "getGroup", "One group.", h_get_group, ADMIN, "groups",
          response=ACCOUNT_OUT, errors=(404,)),
        E("PUT", "/api/groups/{group}/members", "setGroupMembers", "Replace a group's members.", h_set_members,
          ADMIN, "groups", body=S.obj({"members": S.array(S.ADDRESS, minItems=1, maxItems=1000)}, ("members",)),
          response=ACCOUNT_OUT, errors=(404,)),
        E("DELETE", "/api/groups/{group}", "removeGroup", "Remove a group.", h_remove_group, ADMIN, "groups",
          response=REMOVED, errors=(404,)),
        # API tokens
        E("GET", "/api/tokens", "listAPITokens", "API tokens (never the secrets).", h_list_tokens, ADMIN,
          "credentials", response=S.array(TOKEN_OUT)),
        E("POST", "/api/tokens", "createAPIToken",
          "Create a bearer token acting as an account; the secret is in this response only.", h_add_token, ADMIN,
          "credentials",
          body=S.obj({"account": S.LOGIN, "label": S.LABEL,
                      "lifetime_seconds": {"type": "integer", "minimum": 0, "maximum": 10 * 365 * 86400,
                                           "description": "0: does not expire"}}, ("account", "label")),
          response=TOKEN_OUT, status=201, errors=(404, 409)),
        E("DELETE", "/api/tokens/{id}", "revokeAPIToken", "Revoke an API token.", h_remove_token, ADMIN,
          "credentials", response=REMOVED, errors=(404,)),
        # operations
        E("GET", "/api/logs", "getRecentLogs", "Recent log events, newest first.", h_logs, ADMIN, "server",
          query={"level": {"type": "string", "enum": list(LEVELS)},
                 "contains": {"type": "string", "maxLength": 200},
                 "namespace": {"type": "string", "maxLength": 200},
                 "since": {"type": "number", "minimum": 0, "maximum": 1e11},
                 "after": {"type": "integer", "minimum": 0, "maximum": (1 << 53) - 1},
                 "limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
          response=S.array(LOG_OUT)),
        E("GET", "/api/config", "getConfig", "The running configuration (secrets hidden) and the live settings.",
          h_get_config, ADMIN, "server",
          response=S.obj({"config": {"type": "object"}, "live": {"type": "object"}}, ("config", "live"))),
        E("PATCH", "/api/config", "updateLiveSettings",
          "Change live-reloadable settings until restart (edit the file to keep them).", h_patch_config, ADMIN,
          "server", body=_live_settings_body(),
          response=S.obj({"config": {"type": "object"}, "live": {"type": "object"}}, ("config", "live"))),
    ]
    _link(table)
    if with_queue:
        queue_id = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
        table += [
            E("GET", "/api/queue", "listQueue", "Messages in the outbound queue.", h_queue_list, ADMIN, "queue",
              response=S.array(QUEUE_ENTRY), errors=(503,)),
            E("GET", "/api/queue/{id}", "showQueued", "One queued message and its recipients' status.",
              h_queue_show, ADMIN, "queue", response=QUEUE_ENTRY, errors=(404, 503)),
            E("POST", "/api/queue/{id}/retry", "retryQueued", "Try to deliver a queued message now.",
              h_queue_retry, ADMIN, "queue", response=UPDATED, errors=(404, 503)),
            E("DELETE", "/api/queue/{id}", "deleteQueued", "Remove a message from the queue without a bounce.",
              h_queue_delete, ADMIN, "queue", response=REMOVED, errors=(404, 503)),
        ]
        for e in table[-4:]:
            e.path_schemas = {"id": queue_id}  # type: ignore[attr-defined]
    return table


def _q(value: Any) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="@")


#: What each create operation makes, and which operations then use it.
_CREATED: dict[str, tuple[Callable[[Any, Any], str], dict[str, dict[str, str]]]] = {
    "addDomain": (lambda p, r: f"/api/domains/{_q(r['name'])}",
                  {op: {"domain": "$response.body#/name"} for op in
                   ("getDomain", "updateDomain", "removeDomain", "getDomainDNS", "listDKIMKeys", "generateDKIMKey")}),
    "generateDKIMKey": (lambda p, r: f"/api/domains/{_q(r['domain'])}/dkim/{_q(r['selector'])}",
                        {op: {"domain": "$request.path.domain", "selector": "$response.body#/selector"}
                         for op in ("getDKIMKey", "removeDKIMKey")}),
    "addAccount": (lambda p, r: f"/api/accounts/{_q(r['name'])}",
                   {op: {"account": "$response.body#/name"} for op in
                    ("getAccount", "updateAccount", "removeAccount", "addAccountAddress", "getQuota", "setQuota",
                     "listAppPasswords", "createAppPassword")}),
    "addAccountAddress": (lambda p, r: f"/api/accounts/{_q(r['name'])}", {}),
    "createAppPassword": (lambda p, r: f"/api/accounts/{_q(p['account'])}/app-passwords/{r['id']}",
                          {"revokeAppPassword": {"account": "$request.path.account", "id": "$response.body#/id"}}),
    "addAlias": (lambda p, r: f"/api/aliases/{_q(r['address'])}",
                 {op: {"address": "$response.body#/address"} for op in ("getAlias", "removeAlias")}),
    "addGroup": (lambda p, r: f"/api/groups/{_q(r['name'])}",
                 {op: {"group": "$response.body#/name"} for op in ("getGroup", "setGroupMembers", "removeGroup")}),
    "createAPIToken": (lambda p, r: f"/api/tokens/{r['id']}", {"revokeAPIToken": {"id": "$response.body#/id"}}),
    "putSieveScript": (lambda p, r: f"/api/accounts/{_q(p['account'])}/sieve/{_q(r['name'])}",
                       {op: {"account": "$request.path.account", "script": "$request.path.script"} for op in
                        ("getSieveScript", "activateSieveScript", "deactivateSieveScript", "deleteSieveScript")}),
}


def _link(table: list[Endpoint]) -> None:
    for endpoint in table:
        created = _CREATED.get(endpoint.operation_id)
        if created is not None:
            endpoint.location, endpoint.links = created


PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "domain": S.DOMAIN, "account": S.LOGIN, "address": S.ADDRESS, "group": S.LOGIN, "selector": S.SELECTOR,
    "id": S.ID, "script": SCRIPT_NAME, "kind": SPAM_CLASS,
}


def _path_schema(endpoint: Endpoint, name: str) -> dict[str, Any]:
    return getattr(endpoint, "path_schemas", {}).get(name) or PATH_SCHEMAS[name]


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
            raise _TooLarge(f"this request body may have at most {limit} bytes")
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


class _TooLarge(AdminError):
    code = "too_large"
    status = 413


class _UnsupportedMediaType(AdminError):
    code = "unsupported_media_type"
    status = 415


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
