"""The shared admin service in CLI mode (synchronous, real stores), and its helpers."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel

from mailserve.admin.errors import Conflict, Forbidden, InvalidRequest, InvalidScript, NotFound, Unavailable, classify
from mailserve.admin.events import RecentEvents
from mailserve.admin.service import AdminService
from mailserve.admin.settings import apply_live_settings, config_view
from mailserve.cli import Stores
from mailserve.directory.credentials import Credentials
from mailserve.web.admin.schema import ADDRESS, DOMAIN, SchemaError, obj, validate
from tests.e2e.harness import make_config


@pytest.fixture
def service(tmp_path):
    stores = Stores(make_config(tmp_path))
    yield AdminService.for_stores(stores)
    stores.close()


def test_cli_mode_operations_return_values(service):
    assert service.add_domain("cli.example.test")["name"] == "cli.example.test"
    account = service.add_account("ann", "ann-password", ["ann@cli.example.test", "ANN@cli.example.test"])
    assert account["addresses"] == ["ann@cli.example.test"]  # the same address twice is one
    with pytest.raises(Conflict):
        service.add_domain("cli.example.test")
    with pytest.raises(NotFound):
        service.get_account("nobody")
    with pytest.raises(InvalidRequest):
        service.add_account("bob", "short")
    updated = service.update_account("ann", display_name="Ann", quota_bytes=1000)
    assert updated["display_name"] == "Ann" and updated["quota"]["bytes_limit"] == 1000
    with pytest.raises(Forbidden):
        service.change_own_password(account["id"], "wrong", "ann-new-password")
    assert service.change_own_password(account["id"], "ann-password", "ann-new-password") == {"updated": "ann"}
    assert service.directory.verify_password("ann", "ann-new-password") is not None
    with pytest.raises(Conflict):  # still used by ann
        service.remove_domain("cli.example.test")
    key = service.generate_dkim_key("cli.example.test", "k1", "ed25519-sha256")
    assert service.signing_key("cli.example.test", "k1")[0] == "ed25519-sha256"
    assert any(r["name"] == key["record"]["name"] for r in service.dns_records("cli.example.test"))
    assert service.remove_domain("cli.example.test", force=True) == {"removed": "cli.example.test"}
    assert service.signing_key("cli.example.test", "k1") is None


def test_credentials(metadata):
    credentials = Credentials(metadata)
    record, secret = credentials.create_app_password(7, "laptop")
    assert [p.label for p in credentials.list_app_passwords(7)] == [record.label] == ["laptop"]
    assert credentials.verify_app_password(7, secret)
    assert not credentials.verify_app_password(8, secret)
    assert not credentials.verify_app_password(7, secret + "x")
    token, bearer = credentials.create_api_token(7, "script", lifetime=60)
    assert credentials.find_api_token(bearer) == token
    assert credentials.find_api_token("mst_" + "x" * 32) is None
    assert credentials.revoke_all_of(7) == 2
    assert not credentials.verify_app_password(7, secret) and credentials.find_api_token(bearer) is None


def test_expired_tokens_are_refused(metadata):
    now = [1000.0]
    credentials = Credentials(metadata, clock=lambda: now[0])
    _, bearer = credentials.create_api_token(1, "short", lifetime=10)
    assert credentials.find_api_token(bearer) is not None
    now[0] = 1010.0
    assert credentials.find_api_token(bearer) is None


def test_schema_validation():
    schema = obj({"name": DOMAIN, "to": ADDRESS, "n": {"type": "integer", "minimum": 0}}, ("name",))
    assert validate({"name": "a.example", "n": 2.0}, schema) == {"name": "a.example", "n": 2}
    for bad, field in (({"name": "a.example\n"}, "name"), ({"name": "A.example"}, "name"),
                       ({"name": "a.example", "extra": 1}, "extra"), ({"name": "a.example", "n": True}, "n"),
                       ({"name": "a.example", "n": -1}, "n"), ({}, "name"),
                       ({"name": "a.example", "to": "x@" + "a" * 250 + ".example"}, "to")):
        with pytest.raises(SchemaError) as raised:
            validate(bad, schema)
        assert raised.value.field == field


def test_live_settings_validate_everything_before_applying(tmp_path):
    config = make_config(tmp_path)
    changed = apply_live_settings(config, {"smtp.max_recipients": 3, "imap.idle_timeout": 60})
    assert changed.smtp.max_recipients == 3 and changed.imap.idle_timeout == 60
    assert config.smtp.max_recipients != 3
    for bad in ({"smtp.max_recipients": 0}, {"server.hostname": "x"}, {"smtp.max_recipients": True}, {}):
        with pytest.raises(InvalidRequest):
            apply_live_settings(config, bad)
    view = config_view(make_config(tmp_path, smtp={"relay_host": "relay.example.test", "relay_username": "u", "relay_password": "hunter2"}))
    assert view["smtp"]["relay_password"] == "********"


def test_recent_events_are_bounded_and_filterable():
    events = RecentEvents(capacity=3)
    for i in range(5):
        events({"log_format": "event {i}", "i": i, "log_level": LogLevel.info, "log_namespace": "a.b",
                "log_time": 100.0 + i})
    events({"log_format": "noise", "log_level": LogLevel.debug, "log_time": 200.0})
    entries = events.query()
    assert [e.message for e in entries] == ["event 4", "event 3", "event 2"]
    assert [e.message for e in events.query(contains="EVENT 3")] == ["event 3"]
    assert events.query(level="error") == []


def test_spam_training_needs_the_servers_spam_filter(service):
    """Training goes to ``server.spam_filter``; without a server (or a filter) it is 503, not a crash."""
    with pytest.raises(Unavailable) as raised:
        service.train_spam(None, b"Subject: x\r\n\r\nbody\r\n", True)
    assert raised.value.status == 503
    with pytest.raises(InvalidRequest):
        service.train_spam(None, b"", True)


def test_script_refusals_map_to_api_errors():
    from mailserve.sieve import scripts

    assert classify(scripts.NoSuchScript("x")).status == 404
    assert classify(scripts.ScriptIsActive("x")).status == 409
    assert classify(scripts.TooManyScripts("x")).status == 409
    assert classify(scripts.ScriptTooLarge("x")).status == 413
    assert classify(scripts.InvalidScriptName("x")).status == 400
    error = InvalidScript("unexpected character '$'", 3, 7)
    assert error.status == 400 and error.details == {"line": 3, "column": 7} and error.field == "script"
    assert str(error) == "line 3, column 7: unexpected character '$'"


def test_the_last_administrator_cannot_be_removed_disabled_or_demoted(service):
    service.add_account("admin", "admin-password", role="admin")
    with pytest.raises(Conflict, match="last enabled administrator"):
        service.remove_account("admin")
    with pytest.raises(Conflict):
        service.update_account("admin", enabled=False)
    with pytest.raises(Conflict):
        service.update_account("admin", role="user")
    service.add_account("second", "second-password", role="admin")
    assert service.update_account("admin", role="user")["role"] == "user"
    with pytest.raises(Conflict):
        service.remove_account("second")
