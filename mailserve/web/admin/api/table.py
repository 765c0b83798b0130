"""The endpoint table of the admin API: every operation, who may call it, its schemas and its
handler; and, for each create operation, where the created resource lives and which operations
then use it (``Location`` and OpenAPI links).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailserve.admin.events import LEVELS
from mailserve.web.admin import schema as S
from mailserve.web.admin.api.endpoint import ADMIN, ANY, PUBLIC, SELF, Endpoint
from mailserve.web.admin.api.handlers.accounts import (
    h_add_account,
    h_add_address,
    h_add_app_password,
    h_get_account,
    h_get_quota,
    h_list_accounts,
    h_list_app_passwords,
    h_patch_account,
    h_remove_account,
    h_remove_address,
    h_remove_app_password,
    h_set_quota,
)
from mailserve.web.admin.api.handlers.aliases import (
    h_add_alias,
    h_add_group,
    h_get_alias,
    h_get_group,
    h_list_aliases,
    h_list_groups,
    h_remove_alias,
    h_remove_group,
    h_set_members,
)
from mailserve.web.admin.api.handlers.domains import (
    h_add_dkim,
    h_add_domain,
    h_dns,
    h_get_dkim,
    h_get_domain,
    h_list_dkim,
    h_list_domains,
    h_patch_domain,
    h_remove_dkim,
    h_remove_domain,
)
from mailserve.web.admin.api.handlers.me import h_me, h_me_password
from mailserve.web.admin.api.handlers.queue import h_queue_delete, h_queue_list, h_queue_retry, h_queue_show
from mailserve.web.admin.api.handlers.server import h_get_config, h_logs, h_openapi, h_patch_config, h_status
from mailserve.web.admin.api.handlers.sieve import (
    h_activate_sieve,
    h_deactivate_sieve,
    h_delete_sieve,
    h_get_sieve,
    h_list_sieve,
    h_put_sieve,
)
from mailserve.web.admin.api.handlers.spam import h_train_account, h_train_global
from mailserve.web.admin.api.handlers.tokens import h_add_token, h_list_tokens, h_remove_token
from mailserve.web.admin.api.payloads import (
    ACCOUNT_OUT,
    ALIAS_OUT,
    APP_PASSWORD_OUT,
    DKIM_OUT,
    DNS_RECORD,
    DOMAIN_OUT,
    LOG_OUT,
    ME_OUT,
    QUEUE_ENTRY,
    QUOTA_OUT,
    REMOVED,
    SIEVE_ACTIVE_OUT,
    SIEVE_LIST_OUT,
    SIEVE_OUT,
    STATUS_OUT,
    TOKEN_OUT,
    TRAIN_OUT,
    UPDATED,
    _live_settings_body,
)


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
