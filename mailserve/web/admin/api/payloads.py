"""The JSON shapes of the admin API: what each endpoint answers with, and the request schemas
shared by several endpoints (published as-is in the OpenAPI document, and checked with
:mod:`mailserve.web.admin.schema`).
"""

from __future__ import annotations

from typing import Any

from mailserve.admin.settings import LIVE_SETTINGS
from mailserve.web.admin import schema as S

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


ACCOUNT_PATH = {"account": S.LOGIN}
DOMAIN_PATH = {"domain": S.DOMAIN}
