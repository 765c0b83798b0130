"""The live-settings table and its validation (``mailserve.admin.settings``).

What each live setting does once changed is tested end to end over the protocols in
``tests/web/test_live_settings.py``; here: the table names real options, and a change is
validated like the configuration file before anything is applied.
"""

from __future__ import annotations

import pytest

from mailserve.admin.errors import InvalidRequest
from mailserve.admin.settings import LIVE_SETTINGS, apply_live_settings, live_settings_view
from mailserve.config import Config, Duration, Int, Size
from tests.e2e.harness import make_config


def _kind(key: str):
    section_name, _, name = key.partition(".")
    section_cls = next(opt.kind.section for n, opt in Config.options() if n == section_name)
    return dict(section_cls.options())[name].kind


@pytest.mark.parametrize("key", sorted(LIVE_SETTINGS))
def test_every_live_setting_is_a_bounded_number_with_a_description(key):
    kind = _kind(key)
    # The OpenAPI document describes each one as a number with its range.
    assert isinstance(kind, Int | Size | Duration)
    assert kind.minimum is not None and kind.maximum is not None
    assert LIVE_SETTINGS[key]


def test_view_shows_the_current_value_of_every_live_setting(tmp_path):
    config = make_config(tmp_path, smtp={"max_recipients": 42}, pop3={"idle_timeout": "15m"})
    view = live_settings_view(config)
    assert set(view) == set(LIVE_SETTINGS)
    assert view["smtp.max_recipients"] == 42
    assert view["pop3.idle_timeout"] == 900.0
    assert view["smtp.max_message_size"] == config.smtp.max_message_size


def test_values_are_parsed_as_the_configuration_file_parses_them(tmp_path):
    config = make_config(tmp_path)
    changed = apply_live_settings(config, {"imap.auth_failure_delay": "500ms", "managesieve.max_script_size": "2KiB",
                                           "smtp.rate_per_ip": 0})
    assert changed.imap.auth_failure_delay == 0.5
    assert changed.managesieve.max_script_size == 2048
    assert changed.smtp.rate_per_ip == 0
    # The other settings of the changed sections are carried over unchanged.
    assert changed.imap.max_line_length == config.imap.max_line_length
    assert changed.server == config.server


@pytest.mark.parametrize(("change", "field"), [
    ({"smtp.max_message_size": 1000}, "smtp.max_message_size"),  # below RFC 5321 §4.5.3.1.7's 64K
    ({"smtp.max_recipients": 0}, "smtp.max_recipients"),
    ({"pop3.idle_timeout": 0.5}, "pop3.idle_timeout"),
    ({"http.session_lifetime": "10s"}, "http.session_lifetime"),
    ({"auth.failure_delay": "forever"}, "auth.failure_delay"),
    ({"managesieve.max_scripts": 1.5}, "managesieve.max_scripts"),
    ({"smtp.max_errors": True}, "smtp.max_errors"),
    ({"smtp.max_line_length": 2000}, "smtp.max_line_length"),  # read once per listener: not live
])
def test_an_unusable_change_is_refused_naming_the_key(tmp_path, change, field):
    config = make_config(tmp_path)
    with pytest.raises(InvalidRequest) as raised:
        apply_live_settings(config, change)
    assert raised.value.field == field
    assert field in str(raised.value)


def test_nothing_is_applied_when_one_change_is_refused(tmp_path):
    config = make_config(tmp_path)
    before = live_settings_view(config)
    with pytest.raises(InvalidRequest):
        apply_live_settings(config, {"smtp.max_recipients": 5, "imap.idle_timeout": -1})
    assert live_settings_view(config) == before
    with pytest.raises(InvalidRequest, match="no settings"):
        apply_live_settings(config, {})
