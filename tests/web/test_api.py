"""The admin REST API over a real socket: every endpoint, its errors, and who may call it."""

from __future__ import annotations

import pytest

DOMAIN = "api.example.test"


@pytest.fixture(scope="module")
def populated(web_server):
    s = web_server
    assert s.admin("POST", "/api/domains", {"name": DOMAIN, "description": "test"}).status == 201
    reply = s.admin("POST", "/api/accounts", {"name": f"carol@{DOMAIN}", "password": "carol-password",
                                              "addresses": [f"carol@{DOMAIN}"], "quota_bytes": 5000})
    assert reply.status == 201, reply.body
    reply = s.admin("POST", "/api/accounts", {"name": f"dave@{DOMAIN}", "password": "dave-password",
                                              "addresses": [f"dave@{DOMAIN}"]})
    assert reply.status == 201, reply.body
    return s


def test_openapi_document_is_public_and_lists_every_operation(web_server):
    reply = web_server.request("GET", "/api/openapi.json")
    assert reply.status == 200
    doc = reply.json
    assert doc["openapi"].startswith("3.")
    operations = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {"addDomain", "getDomainDNS", "generateDKIMKey", "addAccount", "updateAccount", "setQuota",
            "addAlias", "addGroup", "createAPIToken", "createAppPassword", "getRecentLogs",
            "updateLiveSettings", "changeMyPassword", "getStatus"} <= operations
    assert doc["paths"]["/api/domains"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "additionalProperties"] is False


def test_authentication_is_required_and_wrong_credentials_refused(web_server):
    reply = web_server.request("GET", "/api/status")
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Basic")
    assert reply.json["error"]["code"] == "unauthenticated"
    assert web_server.request("GET", "/api/status", auth=("admin", "wrong-password")).status == 401
    assert web_server.request("GET", "/api/status", headers={"Authorization": "Basic !!!"}).status == 401
    assert web_server.request("GET", "/api/status", token="mst_not-a-token").status == 401
    assert web_server.request("GET", "/api/status", headers={"Authorization": "Digest x"}).status == 401


def test_status(web_server):
    reply = web_server.admin("GET", "/api/status")
    assert reply.status == 200
    assert reply.json["hostname"] == "mail.example.test"
    assert reply.json["listeners"][0]["protocol"] == "http"


def test_domains_lifecycle_and_dns_records(populated):
    s = populated
    assert DOMAIN in [d["name"] for d in s.admin("GET", "/api/domains").json]
    detail = s.admin("GET", f"/api/domains/{DOMAIN}").json
    assert f"carol@{DOMAIN}" in detail["accounts"]
    assert s.admin("POST", "/api/domains", {"name": DOMAIN}).status == 409
    records = s.admin("GET", f"/api/domains/{DOMAIN}/dns").json
    by_type = {(r["type"], r["name"]) for r in records}
    assert ("MX", f"{DOMAIN}.") in by_type and ("TXT", f"_dmarc.{DOMAIN}.") in by_type
    reply = s.admin("PATCH", f"/api/domains/{DOMAIN}", {"catch_all": f"carol@{DOMAIN}"})
    assert reply.status == 200 and reply.json["catch_all"] == f"carol@{DOMAIN}"
    assert s.admin("PATCH", f"/api/domains/{DOMAIN}", {"catch_all": ""}).json["catch_all"] is None
    # In use: refused without force; nothing removed.
    reply = s.admin("DELETE", f"/api/domains/{DOMAIN}")
    assert reply.status == 409 and "force" in reply.json["error"]["message"]
    assert s.admin("GET", f"/api/domains/{DOMAIN}").status == 200
    assert s.admin("GET", "/api/domains/nowhere.example.test").status == 404
    assert s.admin("POST", "/api/domains", {"name": "other.example.test"}).status == 201
    assert s.admin("DELETE", "/api/domains/other.example.test").json == {"removed": "other.example.test"}
    assert s.admin("GET", "/api/domains/other.example.test").status == 404


def test_malformed_json_unknown_fields_and_wrong_types_are_400_naming_the_field(web_server):
    s = web_server
    reply = s.admin("POST", "/api/domains", raw=b"{not json")
    assert reply.status == 400 and "malformed JSON" in reply.json["error"]["message"]
    reply = s.admin("POST", "/api/domains", {"name": "x.example.test", "colour": "red"})
    assert reply.status == 400 and reply.json["error"]["field"] == "colour"
    reply = s.admin("POST", "/api/domains", {"name": 42})
    assert reply.status == 400 and reply.json["error"]["field"] == "name"
    assert "expected a string" in reply.json["error"]["message"]
    reply = s.admin("POST", "/api/domains", {"name": "Not A Domain"})
    assert reply.status == 400
    reply = s.admin("POST", "/api/domains", raw=b'{"name": "x.example.test"}', content_type="text/plain")
    assert reply.status == 415
    reply = s.admin("POST", "/api/domains", raw=b"[" * 100000 + b"]" * 100000)
    assert reply.status == 400
    assert s.admin("GET", "/api/domains/x.example.test").status == 404  # nothing was created


def test_oversized_body_is_refused_with_413(web_server):
    reply = web_server.admin("POST", "/api/domains", raw=b'{"name": "' + b"a" * (2 << 20) + b'"}')
    assert reply.status == 413


def test_unknown_paths_and_methods(web_server):
    assert web_server.admin("GET", "/api/nothing-here").status == 404
    reply = web_server.admin("PUT", "/api/domains")
    assert reply.status == 405 and set(reply.headers["allow"].split(", ")) == {"GET", "POST"}


def test_accounts_update_is_all_or_nothing(populated):
    s = populated
    name = f"dave@{DOMAIN}"
    reply = s.admin("PATCH", f"/api/accounts/{name}", {"display_name": "Dave", "quota_bytes": -1})
    assert reply.status == 400
    assert s.admin("GET", f"/api/accounts/{name}").json["display_name"] == ""
    reply = s.admin("PATCH", f"/api/accounts/{name}", {"display_name": "Dave", "quota_bytes": 7000})
    assert reply.status == 200
    assert reply.json["display_name"] == "Dave" and reply.json["quota"]["bytes_limit"] == 7000


def test_account_addresses_and_password(populated):
    s = populated
    name = f"dave@{DOMAIN}"
    reply = s.admin("POST", f"/api/accounts/{name}/addresses", {"address": f"d@{DOMAIN}"})
    assert reply.status == 201 and f"d@{DOMAIN}" in reply.json["addresses"]
    assert s.admin("POST", f"/api/accounts/{name}/addresses", {"address": f"carol@{DOMAIN}"}).status == 409
    assert s.admin("POST", f"/api/accounts/{name}/addresses", {"address": "x@elsewhere.test"}).status == 404
    reply = s.admin("DELETE", f"/api/accounts/{name}/addresses/d@{DOMAIN}")
    assert reply.status == 200 and f"d@{DOMAIN}" not in reply.json["addresses"]
    assert s.admin("PATCH", f"/api/accounts/{name}", {"password": "short"}).status == 400
    assert s.admin("PATCH", f"/api/accounts/{name}", {"password": "dave-new-password"}).status == 200
    assert s.request("GET", f"/api/accounts/{name}", auth=(name, "dave-password")).status == 401
    assert s.request("GET", f"/api/accounts/{name}", auth=(name, "dave-new-password")).status == 200


def test_a_user_sees_only_their_own_account(populated):
    s = populated
    carol = (f"carol@{DOMAIN}", "carol-password")
    assert s.request("GET", f"/api/accounts/carol@{DOMAIN}", auth=carol).status == 200
    assert s.request("GET", f"/api/accounts/carol@{DOMAIN}/quota", auth=carol).json["bytes_limit"] == 5000
    for path in (f"/api/accounts/dave@{DOMAIN}", f"/api/accounts/dave@{DOMAIN}/quota", "/api/accounts/admin",
                 "/api/accounts/nobody@nowhere.test", f"/api/accounts/dave@{DOMAIN}/app-passwords"):
        reply = s.request("GET", path, auth=carol)
        assert reply.status == 403, path
    for method, path, body in (("GET", "/api/domains", None), ("GET", "/api/status", None),
                               ("POST", "/api/domains", {"name": "evil.example.test"}),
                               ("PUT", f"/api/accounts/carol@{DOMAIN}/quota", {"bytes_limit": 0}),
                               ("PATCH", f"/api/accounts/carol@{DOMAIN}", {"role": "admin"}),
                               ("GET", "/api/logs", None), ("GET", "/api/config", None)):
        assert s.request(method, path, body, auth=carol).status == 403, path
    me = s.request("GET", "/api/me", auth=carol).json
    assert me["account"]["name"] == f"carol@{DOMAIN}" and me["is_admin"] is False


def test_own_password_change_needs_the_current_one(populated):
    s = populated
    carol = (f"carol@{DOMAIN}", "carol-password")
    reply = s.request("POST", "/api/me/password", {"current_password": "wrong-one", "new_password": "carol-new-pw"},
                      auth=carol)
    assert reply.status == 403
    reply = s.request("POST", "/api/me/password",
                      {"current_password": "carol-password", "new_password": "carol-new-pw"}, auth=carol)
    assert reply.status == 200
    assert s.request("GET", "/api/me", auth=(carol[0], "carol-new-pw")).status == 200
    s.request("POST", "/api/me/password", {"current_password": "carol-new-pw", "new_password": "carol-password"},
              auth=(carol[0], "carol-new-pw"))


def test_app_passwords_log_in_and_can_be_revoked(populated):
    s = populated
    carol = (f"carol@{DOMAIN}", "carol-password")
    path = f"/api/accounts/carol@{DOMAIN}/app-passwords"
    reply = s.request("POST", path, {"label": "phone"}, auth=carol)
    assert reply.status == 201
    secret, pid = reply.json["password"], reply.json["id"]
    listed = s.request("GET", path, auth=carol).json
    assert [p["label"] for p in listed] == ["phone"] and "password" not in listed[0]
    assert s.request("GET", "/api/me", auth=(carol[0], secret)).status == 200
    assert s.request("DELETE", f"{path}/{pid}", auth=carol).status == 200
    assert s.request("GET", "/api/me", auth=(carol[0], secret)).status == 401
    assert s.request("DELETE", f"{path}/{pid}", auth=carol).status == 404
    assert s.request("POST", path, {"label": "   "}, auth=carol).status == 400


def test_api_tokens(populated):
    s = populated
    reply = s.admin("POST", "/api/tokens", {"account": "admin", "label": "backup script"})
    assert reply.status == 201
    token, tid = reply.json["token"], reply.json["id"]
    assert token.startswith("mst_")
    assert s.request("GET", "/api/status", token=token).status == 200
    assert [t["label"] for t in s.admin("GET", "/api/tokens").json] == ["backup script"]
    user_token = s.admin("POST", "/api/tokens", {"account": f"carol@{DOMAIN}", "label": "carol"}).json["token"]
    assert s.request("GET", "/api/status", token=user_token).status == 403
    assert s.admin("POST", "/api/tokens", {"account": "nobody", "label": "x"}).status == 404
    assert s.admin("DELETE", f"/api/tokens/{tid}").status == 200
    assert s.request("GET", "/api/status", token=token).status == 401
    assert s.admin("DELETE", f"/api/tokens/{tid}").status == 404


def test_aliases_and_groups(populated):
    s = populated
    reply = s.admin("POST", "/api/aliases", {"address": f"info@{DOMAIN}", "targets": [f"carol@{DOMAIN}"]})
    assert reply.status == 201
    assert s.admin("POST", "/api/aliases", {"address": f"info@{DOMAIN}", "targets": [f"carol@{DOMAIN}"]}).status == 409
    assert s.admin("POST", "/api/aliases", {"address": f"info@{DOMAIN}", "targets": []}).status == 400
    assert s.admin("GET", f"/api/aliases/info@{DOMAIN}").json["targets"] == [f"carol@{DOMAIN}"]
    assert [a["address"] for a in s.admin("GET", f"/api/aliases?domain={DOMAIN}").json] == [f"info@{DOMAIN}"]
    assert s.admin("GET", "/api/aliases?domain=nowhere.example.test").status == 404
    assert s.admin("GET", "/api/aliases?colour=red").status == 400
    assert s.admin("DELETE", f"/api/aliases/info@{DOMAIN}").status == 200
    assert s.admin("GET", f"/api/aliases/info@{DOMAIN}").status == 404
    reply = s.admin("POST", "/api/groups", {"name": "team", "address": f"team@{DOMAIN}",
                                            "members": [f"carol@{DOMAIN}", f"dave@{DOMAIN}"]})
    assert reply.status == 201 and reply.json["kind"] == "group"
    reply = s.admin("PUT", "/api/groups/team/members", {"members": [f"carol@{DOMAIN}"]})
    assert reply.json["members"] == [f"carol@{DOMAIN}"]
    assert s.admin("GET", "/api/groups/team").status == 200
    assert s.admin("GET", f"/api/groups/carol@{DOMAIN}").status == 404  # an account, not a group
    assert s.admin("DELETE", "/api/groups/team").status == 200


def test_dkim_keys(populated):
    s = populated
    reply = s.admin("POST", f"/api/domains/{DOMAIN}/dkim", {"selector": "s1", "algorithm": "ed25519-sha256"})
    assert reply.status == 201
    assert reply.json["record"]["name"] == f"s1._domainkey.{DOMAIN}."
    assert reply.json["record"]["value"].startswith("v=DKIM1; k=ed25519; p=")
    assert "private_key" not in reply.json
    assert s.admin("POST", f"/api/domains/{DOMAIN}/dkim", {"selector": "s1"}).status == 409
    reply = s.admin("POST", f"/api/domains/{DOMAIN}/dkim", {"selector": "r1", "algorithm": "rsa-sha256"})
    assert reply.json["record"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert {k["selector"] for k in s.admin("GET", f"/api/domains/{DOMAIN}/dkim").json} == {"s1", "r1"}
    dns = s.admin("GET", f"/api/domains/{DOMAIN}/dns").json
    assert any(r["name"] == f"s1._domainkey.{DOMAIN}." for r in dns)
    assert s.admin("DELETE", f"/api/domains/{DOMAIN}/dkim/s1").status == 200
    assert s.admin("GET", f"/api/domains/{DOMAIN}/dkim/s1").status == 404


def test_quota(populated):
    s = populated
    reply = s.admin("PUT", f"/api/accounts/dave@{DOMAIN}/quota", {"bytes_limit": 123456})
    assert reply.status == 200 and reply.json["bytes_limit"] == 123456
    assert s.admin("PUT", f"/api/accounts/dave@{DOMAIN}/quota", {"bytes_limit": "lots"}).status == 400


def test_last_administrator_and_self_protection(web_server):
    s = web_server
    assert s.admin("DELETE", "/api/accounts/admin").status == 409
    assert s.admin("PATCH", "/api/accounts/admin", {"enabled": False}).status == 409
    assert s.admin("PATCH", "/api/accounts/admin", {"password": "another-password"}).status == 409
    assert s.admin("GET", "/api/me").json["is_admin"] is True


def test_logs_and_config(web_server):
    s = web_server
    s.request("GET", "/api/status", auth=("admin", "definitely-wrong"))
    entries = s.admin("GET", "/api/logs?contains=authentication+failed&limit=5").json
    assert entries and all("authentication failed" in e["message"].lower() for e in entries)
    assert s.admin("GET", "/api/logs?level=loud").status == 400
    assert s.admin("GET", "/api/logs?limit=0").status == 400
    config = s.admin("GET", "/api/config").json
    assert config["config"]["server"]["hostname"] == "mail.example.test"
    assert config["config"]["smtp"]["relay_password"] in ("", "********")
    reply = s.admin("PATCH", "/api/config", {"smtp.max_recipients": 7, "auth.failure_delay": 0})
    assert reply.status == 200 and reply.json["live"]["smtp.max_recipients"] == 7
    # One bad value: nothing applied.
    reply = s.admin("PATCH", "/api/config", {"smtp.max_recipients": 9, "imap.idle_timeout": -5})
    assert reply.status == 400
    assert s.admin("GET", "/api/config").json["live"]["smtp.max_recipients"] == 7
    assert s.admin("PATCH", "/api/config", {"server.hostname": "x"}).status == 400


def test_remove_account_removes_its_credentials(populated):
    s = populated
    assert s.admin("POST", "/api/accounts", {"name": "temp", "password": "temp-password"}).status == 201
    token = s.admin("POST", "/api/tokens", {"account": "temp", "label": "t"}).json["token"]
    assert s.request("GET", "/api/me", token=token).status == 200
    assert s.admin("DELETE", "/api/accounts/temp").status == 200
    assert s.request("GET", "/api/me", token=token).status == 401
    assert s.admin("GET", "/api/accounts/temp").status == 404


def test_health_and_mount_points(web_server):
    assert web_server.request("GET", "/health").json == {"status": "ok"}
    ready = web_server.request("GET", "/health/ready")
    assert ready.status == 200 and ready.json["checks"]["listener:http"] == "ok"
    reply = web_server.request("GET", "/jmap")
    assert reply.status == 404 and reply.json["error"]["code"] == "not_found"
    assert web_server.request("GET", "/.well-known/caldav").status == 404
    assert web_server.request("GET", "/").status == 302


def test_metrics_exposition(web_server):
    web_server.request("GET", "/health")
    reply = web_server.request("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    assert 'mailserve_http_request_duration_seconds_count{handler="health",method="GET"}' in text
    assert 'mailserve_auth_failures_total{protocol="http"}' in text
    assert 'mailserve_store_size_bytes{store="metadata"}' in text
