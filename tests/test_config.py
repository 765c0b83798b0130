"""Tests for mailserve.config: parsing, defaults, substitution, every kind of error, shipped files."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tomllib

import pytest
from twisted.logger import LogLevel

from mailserve.config import (
    MAX_CONFIG_FILE_SIZE,
    MAX_REPORTED_ISSUES,
    BindAddress,
    Config,
    ConfigError,
    ConfigIssue,
    default_config,
    load_config,
    parse_config,
    render_default_config,
)

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]

PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"

MINIMAL = """
[server]
hostname = "mail.example.org"
data_dir = "/srv/mail"
"""


def issues_of(text: str, env: dict[str, str] | None = None, source: str = "test.toml") -> list[str]:
    """The rendered issues of a configuration that must fail."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source=source, env=env if env is not None else {})
    return [str(issue) for issue in caught.value.issues]


def only_issue(text: str, env: dict[str, str] | None = None) -> str:
    issues = issues_of(text, env)
    assert len(issues) == 1, issues
    return issues[0]


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, source="test.toml", env=env if env is not None else {})


# --------------------------------------------------------------------------------------------------
# Defaults and typed values
# --------------------------------------------------------------------------------------------------


class TestDefaultConfig:
    def test_defaults_are_typed_and_under_data_dir(self, tmp_path: pathlib.Path) -> None:
        config = default_config(str(tmp_path))
        assert config.server.data_dir == str(tmp_path)
        assert config.storage.lmdb.path == str(tmp_path / "metadata")
        assert config.storage.filesystem.path == str(tmp_path / "blobs")
        assert config.storage.index.path == str(tmp_path / "search")
        assert config.self_signed_dir == str(tmp_path / "tls")
        assert config.storage.lmdb.map_size == 4 * 1024**3
        assert config.smtp.max_message_size == 50 * 1024**2
        assert config.smtp.queue_lifetime == 5 * 86400
        assert config.smtp.delay_notice_after == 4 * 3600
        assert config.imap.idle_timeout == 1800
        assert config.imap.max_line_length == 65536
        assert config.storage.search == "tantivy"
        assert config.logging.path == "-"
        assert config.tls.self_signed is True
        assert config.tls.certificate is None
        assert config.server.max_connections == 1000

    def test_default_hostname_is_the_fqdn_and_feeds_the_http_url(self, tmp_path: pathlib.Path) -> None:
        import socket

        config = default_config(str(tmp_path))
        assert config.server.hostname == socket.getfqdn().lower().rstrip(".")
        assert config.http.url == f"https://{config.server.hostname}/"

    def test_default_listeners_are_the_development_ports_on_loopback(self, tmp_path: pathlib.Path) -> None:
        config = default_config(str(tmp_path))
        ports = {listener.id: listener.bind[0].port for listener in config.listeners}
        assert ports == {
            "smtp": 2525, "submission": 2587, "submissions": 2465, "imap": 2143, "imaps": 2993,
            "pop3": 2110, "pop3s": 2995, "managesieve": 4190, "http": 8080,
        }
        assert all(listener.bind[0].host == "127.0.0.1" for listener in config.listeners)

    def test_config_is_immutable(self, tmp_path: pathlib.Path) -> None:
        config = default_config(str(tmp_path))
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.smtp.max_recipients = 5  # type: ignore[misc]
        assert isinstance(config.listeners, tuple)
        changed = dataclasses.replace(config, smtp=dataclasses.replace(config.smtp, max_recipients=5))
        assert changed.smtp.max_recipients == 5
        assert config.smtp.max_recipients == 100

    def test_two_loads_are_independent_and_equal(self, tmp_path: pathlib.Path) -> None:
        assert default_config(str(tmp_path)) == default_config(str(tmp_path))
        assert default_config(str(tmp_path)) != default_config(str(tmp_path / "other"))


class TestPaths:
    def test_relative_paths_resolve_against_the_working_directory(
            self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        config = parse('[server]\nhostname = "h.example"\ndata_dir = "var"\n[logging]\npath = "logs/m.log"\n')
        assert config.server.data_dir == str(tmp_path / "var")
        assert config.storage.lmdb.path == str(tmp_path / "var" / "metadata")
        assert config.logging.path == str(tmp_path / "logs" / "m.log")

    def test_explicit_storage_path_overrides_data_dir(self) -> None:
        config = parse(MINIMAL + '[storage.lmdb]\npath = "/fast/ssd/meta"\n')
        assert config.storage.lmdb.path == "/fast/ssd/meta"
        assert config.storage.filesystem.path == "/srv/mail/blobs"

    def test_home_is_expanded(self) -> None:
        config = parse(MINIMAL.replace('"/srv/mail"', '"~/mail"'))
        assert config.server.data_dir == os.path.join(os.path.expanduser("~"), "mail")


# --------------------------------------------------------------------------------------------------
# Sizes and durations
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "expected"), [
    ("123456", 123456),
    ('"25MiB"', 25 * 1024**2),
    ('"10M"', 10 * 1024**2),
    ('"1GB"', 10**9),
    ('"1GiB"', 1024**3),
    ('"512 KiB"', 512 * 1024),
    ('"100kb"', 100_000),
    ('"1.5MiB"', 1536 * 1024),
    ('"70000B"', 70000),
])
def test_sizes(written: str, expected: int) -> None:
    assert parse(f"{MINIMAL}[smtp]\nmax_message_size = {written}\n").smtp.max_message_size == expected


@pytest.mark.parametrize(("written", "expected"), [
    ("90", 90.0),
    ("2.5", 2.5),
    ('"30s"', 30.0),
    ('"5m"', 300.0),
    ('"2h"', 7200.0),
    ('"5d"', 432000.0),
    ('"1w"', 604800.0),
    ('"1h30m"', 5400.0),
    ('"1500ms"', 1.5),
])
def test_durations(written: str, expected: float) -> None:
    config = parse(f'{MINIMAL}[smtp]\nqueue_lifetime = "30d"\ndelay_notice_after = {written}\n')
    assert config.smtp.delay_notice_after == expected


def test_bad_size_string() -> None:
    issue = only_issue(MINIMAL + '[smtp]\nmax_message_size = "ten megs"\n')
    assert issue.startswith("test.toml:smtp.max_message_size: invalid size 'ten megs'; expected bytes")


def test_size_with_unknown_unit() -> None:
    assert "invalid size '5XB'" in only_issue(MINIMAL + '[smtp]\nmax_message_size = "5XB"\n')


def test_size_out_of_range_is_shown_in_units() -> None:
    assert only_issue(MINIMAL + '[smtp]\nmax_message_size = "3GiB"\n') == (
        "test.toml:smtp.max_message_size: must be at most 2GiB, got 3GiB")


def test_negative_size() -> None:
    assert only_issue(MINIMAL + "[storage.lmdb]\nmap_size = -1\n") == (
        "test.toml:storage.lmdb.map_size: must not be negative, got -1")


def test_bad_duration_string() -> None:
    issue = only_issue(MINIMAL + '[smtp]\nqueue_lifetime = "five days"\n')
    assert issue.startswith("test.toml:smtp.queue_lifetime: invalid duration 'five days'")


def test_duration_given_as_boolean() -> None:
    assert only_issue(MINIMAL + "[pop3]\nidle_timeout = true\n") == (
        "test.toml:pop3.idle_timeout: expected a duration (seconds, or a string such as "
        "'30s', '5m', '2h', '5d'), got boolean true")


# --------------------------------------------------------------------------------------------------
# Unknown keys and wrong types
# --------------------------------------------------------------------------------------------------


def test_unknown_key_names_the_closest_valid_key() -> None:
    assert only_issue('[server]\nhostnme = "mail.example.org"\ndata_dir = "/srv"\n') == (
        "test.toml:server.hostnme: unknown key 'hostnme'; did you mean 'hostname'?")


def test_unknown_section_names_the_closest_section() -> None:
    assert only_issue(MINIMAL + "[smpt]\nmax_recipients = 5\n") == (
        "test.toml:smpt: unknown key 'smpt'; did you mean 'smtp'?")


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    assert only_issue(MINIMAL + "[imap]\nzzz = 1\n") == "test.toml:imap.zzz: unknown key 'zzz'"


def test_wrong_type_names_expected_and_actual() -> None:
    assert only_issue(MINIMAL + '[smtp]\nmax_recipients = "abc"\n') == (
        "test.toml:smtp.max_recipients: expected an integer, got string 'abc'")


def test_boolean_is_not_an_integer() -> None:
    assert only_issue(MINIMAL + "[smtp]\nmax_errors = true\n") == (
        "test.toml:smtp.max_errors: expected an integer, got boolean true")


def test_integer_out_of_range() -> None:
    assert only_issue(MINIMAL + "[imap]\nmax_auth_failures = 0\n") == (
        "test.toml:imap.max_auth_failures: must be at least 1, got 0")


def test_string_given_as_integer() -> None:
    assert only_issue(MINIMAL + "[logging]\nlevel = 5\n") == (
        "test.toml:logging.level: expected a string, got integer 5")


def test_section_given_as_scalar() -> None:
    assert issues_of("smtp = 5\n" + MINIMAL) == ["test.toml:smtp: expected a table, got integer 5"]


def test_bad_choice_suggests_the_closest() -> None:
    assert only_issue(MINIMAL + '[logging]\nlevel = "debgu"\n') == (
        "test.toml:logging.level: unknown value 'debgu'; expected one of 'debug', 'info', 'warn', 'error'; "
        "did you mean 'debug'?")


def test_choice_alias_and_twisted_level() -> None:
    config = parse(MINIMAL + '[logging]\nlevel = "WARNING"\n')
    assert config.logging.level == "warn"
    assert config.logging.log_level is LogLevel.warn


def test_invalid_hostname() -> None:
    assert only_issue('[server]\nhostname = "mail_server..example"\n') == (
        "test.toml:server.hostname: invalid host name 'mail_server..example'")


def test_hostname_is_normalised() -> None:
    assert parse('[server]\nhostname = "Mail.Example.ORG."\n').server.hostname == "mail.example.org"


def test_invalid_url() -> None:
    assert only_issue(MINIMAL + '[http]\nurl = "ftp://x"\n') == (
        "test.toml:http.url: invalid URL 'ftp://x'; expected an absolute http:// or https:// URL")


def test_url_gets_a_trailing_slash() -> None:
    assert parse(MINIMAL + '[http]\nurl = "https://mail.example.org/jmap"\n').http.url == (
        "https://mail.example.org/jmap/")


def test_list_elements_are_reported_by_index() -> None:
    config = parse(MINIMAL + '[http]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    assert [str(network) for network in config.http.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert only_issue(MINIMAL + '[http]\ntrusted_proxies = ["10.0.0.0/8", "proxy.local"]\n') == (
        "test.toml:http.trusted_proxies[1]: invalid network 'proxy.local'; expected an address or CIDR block")


def test_not_toml_is_one_issue_for_the_whole_file() -> None:
    issues = issues_of("[server\nhostname = 1\n")
    assert len(issues) == 1
    assert issues[0].startswith("test.toml: not valid TOML: ")


def test_issue_format() -> None:
    assert str(ConfigIssue("a.toml", "smtp.max_recipients", "bad")) == "a.toml:smtp.max_recipients: bad"
    assert str(ConfigIssue("a.toml", "", "unreadable")) == "a.toml: unreadable"


# --------------------------------------------------------------------------------------------------
# Listeners
# --------------------------------------------------------------------------------------------------


def test_listener_bind_forms() -> None:
    config = parse(MINIMAL + """
[server.listener.mx]
bind = ["0.0.0.0:25", "[::1]:2525"]
protocol = "smtp"
[server.listener.web]
bind = "[2001:db8::1]:443"
protocol = "HTTP"
tls.implicit = true
""")
    by_id = {listener.id: listener for listener in config.listeners}
    assert set(by_id) == {"mx", "web"}
    assert by_id["mx"].bind == (BindAddress("0.0.0.0", 25), BindAddress("::1", 2525))
    assert [str(address) for address in by_id["mx"].bind] == ["0.0.0.0:25", "[::1]:2525"]
    assert by_id["web"].protocol == "http"
    assert by_id["web"].bind[0].is_ipv6


def test_starttls_defaults_follow_the_protocol() -> None:
    config = parse(MINIMAL + """
[server.listener.imap]
bind = "127.0.0.1:143"
protocol = "imap"
[server.listener.imaps]
bind = "127.0.0.1:993"
protocol = "imap"
tls.implicit = true
[server.listener.web]
bind = "127.0.0.1:80"
protocol = "http"
[server.listener.plain]
bind = "127.0.0.1:110"
protocol = "pop3"
tls.starttls = false
allow_plaintext_auth = true
""")
    tls = {listener.id: (listener.tls.implicit, listener.tls.starttls) for listener in config.listeners}
    assert tls == {"imap": (False, True), "imaps": (True, False), "web": (False, False), "plain": (False, False)}
    assert {listener.id for listener in config.listeners if listener.allow_plaintext_auth} == {"plain"}


@pytest.mark.parametrize(("bind", "message"), [
    ('"127.0.0.1:70000"', "invalid port 70000 in '127.0.0.1:70000'; expected 0..65535"),
    ('"127.0.0.1:imap"', "invalid port 'imap' in '127.0.0.1:imap'; expected 0..65535"),
    ('"localhost:143"', ("invalid address 'localhost:143': 'localhost' is not an IP address "
                        "(use 0.0.0.0 or [::] for all interfaces)")),
    ('"::1:143"', "invalid address '::1:143'; expected 'host:port' (IPv6 as '[::1]:143')"),
    ('"[127.0.0.1]:143"', "invalid address '[127.0.0.1]:143': only IPv6 addresses go in brackets"),
    ("143", "expected an address string such as '127.0.0.1:143' or '[::]:143', got integer 143"),
])
def test_bad_bind_address(bind: str, message: str) -> None:
    assert only_issue(MINIMAL + f'[server.listener.imap]\nbind = {bind}\nprotocol = "imap"\n') == (
        f"test.toml:server.listener.imap.bind: {message}")


def test_bad_bind_in_a_list_names_the_element() -> None:
    assert only_issue(MINIMAL + '[server.listener.imap]\nbind = ["127.0.0.1:143", "1.2.3.4:99999"]\n'
                      'protocol = "imap"\n') == (
        "test.toml:server.listener.imap.bind[1]: invalid port 99999 in '1.2.3.4:99999'; expected 0..65535")


def test_empty_bind_list() -> None:
    assert only_issue(MINIMAL + '[server.listener.imap]\nbind = []\nprotocol = "imap"\n') == (
        "test.toml:server.listener.imap.bind: must not be empty")


def test_bad_protocol() -> None:
    assert only_issue(MINIMAL + '[server.listener.imap]\nbind = "127.0.0.1:143"\nprotocol = "imap4"\n') == (
        "test.toml:server.listener.imap.protocol: unknown value 'imap4'; expected one of 'smtp', "
        "'submission', 'imap', 'pop3', 'managesieve', 'http'; did you mean 'imap'?")


def test_missing_required_keys() -> None:
    assert issues_of(MINIMAL + "[server.listener.imap]\n") == [
        "test.toml:server.listener.imap.bind: is required",
        "test.toml:server.listener.imap.protocol: is required",
    ]


def test_bad_listener_name() -> None:
    assert only_issue(MINIMAL + '[server.listener."my imap"]\nbind = "127.0.0.1:143"\nprotocol = "imap"\n') == (
        "test.toml:server.listener.\"my imap\": invalid name: 'my imap' must be 1 to 64 letters, digits, "
        "'-' or '_'")


def test_duplicate_bind_across_listeners() -> None:
    assert only_issue(MINIMAL + """
[server.listener.imap]
bind = "127.0.0.1:143"
protocol = "imap"
[server.listener.other]
bind = ["127.0.0.1:144", "127.0.0.1:143"]
protocol = "imap"
""") == "test.toml:server.listener.other.bind[1]: address 127.0.0.1:143 is already used by listener 'imap'"


def test_wildcard_overlaps_specific_address() -> None:
    assert only_issue(MINIMAL + """
[server.listener.all]
bind = "[::]:25"
protocol = "smtp"
[server.listener.local]
bind = "127.0.0.1:25"
protocol = "smtp"
""") == "test.toml:server.listener.local.bind: address 127.0.0.1:25 overlaps [::]:25 of listener 'all'"


def test_ipv4_wildcard_does_not_overlap_ipv6_address_and_port_zero_never_clashes() -> None:
    config = parse(MINIMAL + """
[server.listener.a]
bind = ["0.0.0.0:25", "127.0.0.1:0"]
protocol = "smtp"
[server.listener.b]
bind = ["[::1]:25", "127.0.0.1:0"]
protocol = "smtp"
""")
    assert len(config.listeners) == 2


def test_starttls_on_http_and_with_implicit_tls() -> None:
    assert issues_of(MINIMAL + """
[server.listener.web]
bind = "127.0.0.1:80"
protocol = "http"
tls.starttls = true
[server.listener.imaps]
bind = "127.0.0.1:993"
protocol = "imap"
tls = { implicit = true, starttls = true }
""") == [
        "test.toml:server.listener.web.tls.starttls: protocol 'http' has no STARTTLS",
        ("test.toml:server.listener.imaps.tls.starttls: cannot be combined with tls.implicit: "
        "the connection is already encrypted"),
    ]


# --------------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def pem_files(tmp_path: pathlib.Path) -> tuple[str, str]:
    certificate = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    certificate.write_text(PEM_CERTIFICATE)
    key.write_text(PEM_KEY)
    return str(certificate), str(key)


def test_certificate_and_key(pem_files: tuple[str, str]) -> None:
    certificate, key = pem_files
    config = parse(MINIMAL + f'[tls]\ncertificate = "{certificate}"\nprivate_key = "{key}"\n'
                   f'[tls.sni."mail.example.net"]\ncertificate = "{certificate}"\nprivate_key = "{key}"\n'
                   f'[tls.sni."*.example.com"]\ncertificate = "{certificate}"\nprivate_key = "{key}"\n')
    assert config.tls.certificate == certificate
    assert config.tls.private_key == key
    assert [entry.hostname for entry in config.tls.sni] == ["mail.example.net", "*.example.com"]


def test_certificate_without_key(pem_files: tuple[str, str]) -> None:
    assert only_issue(MINIMAL + f'[tls]\ncertificate = "{pem_files[0]}"\n') == (
        "test.toml:tls.private_key: is required when certificate is set (set both or neither)")


def test_missing_certificate_file_is_reported_once(tmp_path: pathlib.Path, pem_files: tuple[str, str]) -> None:
    missing = tmp_path / "nope.pem"
    assert only_issue(MINIMAL + f'[tls]\ncertificate = "{missing}"\nprivate_key = "{pem_files[1]}"\n') == (
        f"test.toml:tls.certificate: file '{missing}' does not exist")


def test_certificate_that_is_not_pem(tmp_path: pathlib.Path, pem_files: tuple[str, str]) -> None:
    der = tmp_path / "cert.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    assert only_issue(MINIMAL + f'[tls]\ncertificate = "{der}"\nprivate_key = "{pem_files[1]}"\n') == (
        f"test.toml:tls.certificate: '{der}' is not a PEM file (no '-----BEGIN' line; RFC 7468)")


def test_sni_entry_names_its_quoted_key(tmp_path: pathlib.Path, pem_files: tuple[str, str]) -> None:
    assert only_issue(MINIMAL + f'[tls.sni."mail.example.net"]\ncertificate = "{pem_files[0]}"\n') == (
        'test.toml:tls.sni."mail.example.net".private_key: is required')


def test_tls_listeners_need_a_certificate_source() -> None:
    assert issues_of(MINIMAL + """
[tls]
self_signed = false
[server.listener.imaps]
bind = "127.0.0.1:993"
protocol = "imap"
tls.implicit = true
[server.listener.web]
bind = "127.0.0.1:80"
protocol = "http"
""") == [
        ("test.toml:server.listener.imaps.tls.implicit: needs a certificate: set tls.certificate and "
        "tls.private_key, or tls.self_signed = true"),
    ]


# --------------------------------------------------------------------------------------------------
# Substitution
# --------------------------------------------------------------------------------------------------


def test_env_substitution_in_strings_arrays_and_numbers() -> None:
    config = parse("""
[server]
hostname = "%{env:MAIL_HOST}%"
data_dir = "/srv/%{env:INSTANCE}%/data"
max_connections = "%{env:MAX_CONN}%"
[http]
trusted_proxies = ["%{env:PROXY}%"]
[tls]
self_signed = "%{env:SELF_SIGNED}%"
""", env={"MAIL_HOST": "mx.example.org", "INSTANCE": "a1", "MAX_CONN": "77", "PROXY": "10.1.0.0/16",
          "SELF_SIGNED": "true"})
    assert config.server.hostname == "mx.example.org"
    assert config.server.data_dir == "/srv/a1/data"
    assert config.server.max_connections == 77
    assert [str(network) for network in config.http.trusted_proxies] == ["10.1.0.0/16"]
    assert config.tls.self_signed is True
    assert config.storage.lmdb.path == "/srv/a1/data/metadata"


def test_env_default_is_used_only_when_unset() -> None:
    text = MINIMAL + '[smtp]\nrelay_host = "%{env:RELAY:smtp.example.net}%"\n'
    assert parse(text).smtp.relay_host == "smtp.example.net"
    assert parse(text, env={"RELAY": "relay.example.com"}).smtp.relay_host == "relay.example.com"
    assert parse(text, env={"RELAY": ""}).smtp.relay_host == ""


def test_missing_env_var_names_the_key() -> None:
    assert only_issue(MINIMAL + '[smtp]\nrelay_host = "%{env:RELAY}%"\n') == (
        "test.toml:smtp.relay_host: environment variable 'RELAY' is not set "
        "(write %{env:RELAY:default}% for a default)")


def test_substituted_value_is_still_validated() -> None:
    assert only_issue(MINIMAL + '[smtp]\nmax_recipients = "%{env:N}%"\n', env={"N": "lots"}) == (
        "test.toml:smtp.max_recipients: expected an integer, got string 'lots'")


def test_file_substitution_strips_one_trailing_newline(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret pass\n")
    config = parse(MINIMAL + f'[smtp]\nrelay_host = "smtp.example.net"\nrelay_username = "me"\n'
                   f'relay_password = "%{{file:{secret}}}%"\n')
    assert config.smtp.relay_password == "s3cret pass"
    assert "s3cret" not in repr(config)


def test_file_substitution_relative_to_working_directory(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "name").write_text("mx.example.org")
    monkeypatch.chdir(tmp_path)
    assert parse('[server]\nhostname = "%{file:name}%"\n').server.hostname == "mx.example.org"


def test_unreadable_file_names_the_key(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing"
    assert only_issue(MINIMAL + f'[smtp]\nrelay_password = "%{{file:{missing}}}%"\n') == (
        f"test.toml:smtp.relay_password: cannot read '{missing}': No such file or directory")


def test_file_substitution_of_a_directory(tmp_path: pathlib.Path) -> None:
    issue = only_issue(MINIMAL + f'[smtp]\nrelay_password = "%{{file:{tmp_path}}}%"\n')
    assert issue.startswith(f"test.toml:smtp.relay_password: cannot read '{tmp_path}': ")


def test_unknown_substitution() -> None:
    assert only_issue(MINIMAL + '[smtp]\nrelay_host = "%{vault:relay}%"\n') == (
        "test.toml:smtp.relay_host: unknown substitution %{vault:relay}%; "
        "expected %{env:NAME}%, %{env:NAME:default}% or %{file:PATH}%")


def test_substitution_is_not_recursive() -> None:
    config = parse(MINIMAL + '[smtp]\nrelay_host = "smtp.example.net"\nrelay_username = "me"\n'
                   'relay_password = "%{env:A}%"\n', env={"A": "%{env:B}%", "B": "x"})
    assert config.smtp.relay_password == "%{env:B}%"


def test_failed_substitution_of_a_required_key_is_reported_once() -> None:
    assert only_issue(MINIMAL + '[server.listener.imap]\nbind = "%{env:IMAP_BIND}%"\nprotocol = "imap"\n') == (
        "test.toml:server.listener.imap.bind: environment variable 'IMAP_BIND' is not set "
        "(write %{env:IMAP_BIND:default}% for a default)")


def test_from_dict_substitutes_too() -> None:
    config = Config.from_dict({"server": {"hostname": "%{env:H}%", "data_dir": "/srv"}}, "lib", env={"H": "a.example"})
    assert config.server.hostname == "a.example"
    with pytest.raises(ConfigError) as caught:
        Config.from_dict({"server": {"hostname": "%{env:H}%"}}, "lib", env={})
    assert [issue.file for issue in caught.value.issues] == ["lib"]


# --------------------------------------------------------------------------------------------------
# Cross-key rules
# --------------------------------------------------------------------------------------------------


def test_smtp_cross_checks() -> None:
    assert issues_of(MINIMAL + """
[smtp]
queue_lifetime = "1h"
delay_notice_after = "2h"
retry_initial = "2h"
relay_username = "me"
""") == [
        "test.toml:smtp.delay_notice_after: must be shorter than queue_lifetime (1h), or 0",
        "test.toml:smtp.retry_initial: must not exceed retry_max (1h)",
        "test.toml:smtp.relay_password: is required when the other relay credential is set",
        "test.toml:smtp.relay_username: is set but relay_host is not",
    ]


def test_an_invalid_value_does_not_cascade_into_cross_checks() -> None:
    assert only_issue(MINIMAL + '[smtp]\nqueue_lifetime = "soon"\ndelay_notice_after = "6d"\n').startswith(
        "test.toml:smtp.queue_lifetime: invalid duration 'soon'")


def test_per_ip_limit_within_total() -> None:
    assert only_issue(MINIMAL.replace('data_dir = "/srv/mail"', 'data_dir = "/srv/mail"\nmax_connections = 10\n'
                                      "max_connections_per_ip = 20")) == (
        "test.toml:server.max_connections_per_ip: must not exceed max_connections (10)")


def test_argon2_memory_per_lane() -> None:
    assert only_issue(MINIMAL + '[auth]\nargon2_memory_cost = "64KiB"\nargon2_parallelism = 16\n') == (
        "test.toml:auth.argon2_memory_cost: must be at least 8KiB per lane of argon2_parallelism (RFC 9106 §3.1)")


# --------------------------------------------------------------------------------------------------
# Files: several mistakes at once, unreadable files, shipped configurations
# --------------------------------------------------------------------------------------------------


def test_three_mistakes_give_exactly_three_issues(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mailserve.toml"
    path.write_text("""
[server]
hostnme = "mail.example.org"
data_dir = "/srv/mail"

[server.listener.imap]
bind = "127.0.0.1:143"
protocol = "imap"

[smtp]
max_recipients = "abc"

[imap]
max_literal_size = "big"
""")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}:server.hostnme: unknown key 'hostnme'; did you mean 'hostname'?",
        f"{path}:smtp.max_recipients: expected an integer, got string 'abc'",
        (f"{path}:imap.max_literal_size: invalid size 'big'; expected bytes as an integer or a number with a unit: "
        "B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)"),
    ]
    assert [(issue.file, issue.key) for issue in caught.value.issues] == [
        (str(path), "server.hostnme"), (str(path), "smtp.max_recipients"), (str(path), "imap.max_literal_size")]


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: cannot read configuration: No such file or directory"


def test_oversized_file_is_refused_unread(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "huge.toml"
    with open(path, "wb") as handle:
        handle.write(b"#" * (MAX_CONFIG_FILE_SIZE + 10))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert "larger than 4MiB" in str(caught.value)


def test_file_that_is_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhostname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 24)"


def test_deeply_nested_toml_is_an_error_not_a_crash() -> None:
    issues = issues_of("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert len(issues) == 1 and issues[0].startswith("test.toml: ")


def test_development_config_parses_clean(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(str(REPOSITORY / "etc" / "mailserve.toml"), env={})
    assert config.server.data_dir == str(tmp_path / "var")
    assert config.server.hostname == "localhost"
    assert {(listener.id, listener.bind[0].port) for listener in config.listeners} == {
        ("smtp", 2525), ("submission", 2587), ("submissions", 2465), ("imap", 2143), ("imaps", 2993),
        ("pop3", 2110), ("pop3s", 2995), ("managesieve", 4190), ("http", 8080)}
    assert all(listener.bind[0].host == "127.0.0.1" for listener in config.listeners)
    assert config.tls.self_signed
    assert config.logging.path == "-"


def test_packaged_config_parses_clean() -> None:
    config = load_config(str(REPOSITORY / "contrib" / "mailserve.toml"), env={})
    assert config.server.data_dir == "/var/lib/mailserve"
    ports = {listener.id: (listener.bind[0].port, listener.tls.implicit) for listener in config.listeners}
    assert ports == {
        "smtp": (25, False), "submission": (587, False), "submissions": (465, True), "imap": (143, False),
        "imaps": (993, True), "pop3": (110, False), "pop3s": (995, True), "managesieve": (4190, False),
        "https": (443, True), "http": (80, False)}
    assert config.logging.path == "-"


def test_rendered_default_parses_back_to_the_defaults(tmp_path: pathlib.Path) -> None:
    text = render_default_config(str(tmp_path / "data"), "mail.example.org")
    config = parse(text)
    expected = Config.from_dict({"server": {"data_dir": str(tmp_path / "data"), "hostname": "mail.example.org"}},
                                env={})
    assert config == expected


def uncomment_defaults(text: str) -> str:
    """Turn every top-level "# key = default" line of a rendered file into a live setting.

    Listener-table keys and the SNI example are left commented: they are documentation of tables,
    not defaults of the section they appear in.
    """
    lines = []
    in_example = False
    for line in text.splitlines():
        in_example = line.startswith("# [tls.sni.") or (in_example and line != "")
        match = re.match(r"# ([a-z0-9_]+) = (?!\.\.\.)", line)
        lines.append(line[2:] if match and not in_example and not line.startswith("# allow_plaintext_auth")
                     else line)
    return "\n".join(lines)


def test_rendered_default_documents_every_key() -> None:
    text = render_default_config("var", "mail.example.org")
    uncommented = tomllib.loads(uncomment_defaults(text))
    # Uncommenting every "# key = default" line must itself give a valid configuration equal to the defaults.
    assert Config.from_dict(uncommented, env={}) == Config.from_dict(
        {"server": {"data_dir": "var", "hostname": "mail.example.org"}}, env={})

    def keys_of(section: type, table: dict, path: str) -> None:
        for name, opt in section.options():
            key = opt.key or name
            if key == "listener":
                continue
            if key == "sni":
                assert '[tls.sni."mail.example.org"]' in text
                continue
            assert key in table, f"{path}{key} missing from the rendered file"
            if hasattr(opt.kind, "section"):
                keys_of(opt.kind.section, table[key], f"{path}{key}.")

    keys_of(Config, uncommented, "")
    for listener_key in ("# bind = ", "# protocol = ", "# tls.implicit = false", "# tls.starttls = true",
                         "# allow_plaintext_auth = false"):
        assert listener_key in text


def test_a_garbage_file_lists_a_bounded_number_of_issues() -> None:
    text = "[imap]\n" + "".join(f"key{index} = 1\n" for index in range(5000))
    issues = issues_of(text)
    assert len(issues) == MAX_REPORTED_ISSUES + 1
    assert issues[0] == "test.toml:imap.key0: unknown key 'key0'"
    assert issues[-1] == f"test.toml: {5000 - MAX_REPORTED_ISSUES} more problems not shown"


def test_a_huge_key_is_shortened_in_messages() -> None:
    issue = only_issue(MINIMAL + "[imap]\n" + "x" * 100_000 + " = 1\n")
    assert len(issue) < 300
    assert issue.startswith('test.toml:imap."' + "x" * 97 + '...": unknown key \'xxx')


def test_many_listeners_with_many_addresses_validate_quickly() -> None:
    parts = [MINIMAL]
    for listener in range(300):
        binds = ", ".join(f'"10.0.{listener % 256}.{address}:{2000 + listener}"' for address in range(50))
        parts.append(f'[server.listener.l{listener}]\nbind = [{binds}]\nprotocol = "smtp"\n')
    parts.append('[server.listener.clash]\nbind = "[::]:2001"\nprotocol = "smtp"\n')
    assert issues_of("".join(parts)) == [
        "test.toml:server.listener.clash.bind: address [::]:2001 overlaps 10.0.1.0:2001 of listener 'l1'"]


@pytest.mark.parametrize("text", [
    '[smtp]\nmax_message_size = "' + "9" * 5000 + 'MiB"\n',
    '[smtp]\nmax_message_size = "' + "9" * 400 + '.5MiB"\n',
    '[imap]\nidle_timeout = "' + "9" * 5000 + 's"\n',
    '[imap]\nidle_timeout = "' + "1s" * 5000 + '"\n',
    '[smtp]\nmax_recipients = "%{env:HUGE}%"\n',
    "[smtp]\nmax_recipients = " + "9" * 5000 + "\n",
    "[imap]\nidle_timeout = 1e308\n",
    "[imap]\nidle_timeout = nan\n",
])
def test_absurd_numbers_are_errors_not_crashes(text: str) -> None:
    assert len(issues_of(MINIMAL + text, env={"HUGE": "9" * 5000})) == 1


# --------------------------------------------------------------------------------------------------
# [dns], [mailauth], [spam]
# --------------------------------------------------------------------------------------------------


def test_dns_defaults_and_name_servers() -> None:
    config = parse(MINIMAL)
    assert (config.dns.nameservers, config.dns.timeout, config.dns.cache_entries) == ((), 5.0, 10_000)
    config = parse(MINIMAL + '[dns]\nnameservers = ["192.0.2.53", "127.0.0.1:5353", "[::1]:53"]\ntimeout = "1500ms"\n')
    assert config.dns.nameservers == (("192.0.2.53", 53), ("127.0.0.1", 5353), ("::1", 53))
    assert config.dns.timeout == 1.5


@pytest.mark.parametrize(("value", "message"), [
    ('"ns.example.org"', "invalid name server 'ns.example.org'"),
    ('"127.0.0.1:0"', "invalid port 0 in '127.0.0.1:0'; expected 1..65535"),
    ('"[::1]"', "invalid name server '[::1]'"),
    ("53", "expected a name server address"),
])
def test_bad_name_servers(value: str, message: str) -> None:
    issue = only_issue(MINIMAL + f"[dns]\nnameservers = [{value}]\n")
    assert issue.startswith("test.toml:dns.nameservers[0]: " + message), issue


def test_mailauth_defaults_follow_the_hostname() -> None:
    config = parse(MINIMAL)
    assert config.mailauth.enabled and config.mailauth.authserv_id == ""
    assert (config.mailauth.dmarc_reject, config.mailauth.dmarc_quarantine, config.mailauth.spf_fail) == (
        "reject", "quarantine", "none")
    from mailserve.mailauth.stage import AuthPolicy

    assert AuthPolicy.from_config(config).authserv_id == "mail.example.org"
    named = parse(MINIMAL + '[mailauth]\nauthserv_id = "Auth.Example.org"\nspf_fail = "reject"\n')
    assert AuthPolicy.from_config(named) == AuthPolicy("auth.example.org", spf_fail="reject")


def test_mailauth_policy_words_are_checked() -> None:
    assert only_issue(MINIMAL + '[mailauth]\ndmarc_quarantine = "reject"\n').startswith(
        "test.toml:mailauth.dmarc_quarantine: unknown value 'reject'; expected one of 'quarantine', 'none'")


def test_spam_overrides_reach_the_filter_settings() -> None:
    from mailserve.spam.settings import load_settings

    config = parse(MINIMAL + "[spam.thresholds]\nspam = 6.5\n[spam.scores]\nGTUBE = 900\n"
                   '[spam.allowlist]\nnetworks = ["10.0.0.0/8"]\n')
    settings = load_settings(config.spam.rules)
    assert (settings.spam_threshold, settings.discard_threshold, settings.score("GTUBE")) == (6.5, 12.0, 900.0)
    assert [str(n) for n in settings.allow_networks] == ["10.0.0.0/8"]
    assert len(settings.dnsbls) == 6  # the shipped lists stay unless [[spam.dnsbl]] replaces them
    replaced = parse(MINIMAL + '[[spam.dnsbl]]\nzone = "bl.example.net"\nkind = "ip"\ncodes = { "127.0.0.2" = "RBL_SPAMCOP" }\n')
    assert [d.zone for d in load_settings(replaced.spam.rules).dnsbls] == ["bl.example.net"]
    assert parse(MINIMAL + "[spam]\ndnsbl = []\n").spam.rules["dnsbl"] == []
    # The configuration stays immutable: the overrides are read-only inside it.
    with pytest.raises(TypeError):
        config.spam.scores["GTUBE"] = 1  # type: ignore[index]


def test_spam_override_mistakes_are_reported_with_their_key() -> None:
    issues = issues_of(MINIMAL + '[spam.thresholds]\nspam = "high"\n[spam.scores]\nNO_SUCH_RULE_X = "x"\n'
                       '[[spam.dnsbl]]\nzone = "bad..zone"\nkind = "ip"\ncodes = { "127.0.0.2" = "RBL_SPAMCOP" }\n')
    assert "test.toml:spam.thresholds.spam: expected a finite number, got 'high'" in issues
    assert "test.toml:spam.scores.NO_SUCH_RULE_X: expected a finite number, got 'x'" in issues
    assert any(issue.startswith("test.toml:spam.dnsbl[0].zone: ") for issue in issues), issues
    assert only_issue(MINIMAL + "[spam]\nscores = 3\n") == "test.toml:spam.scores: expected a table, got integer 3"
    assert only_issue(MINIMAL + "[spam]\nenabled = 1\n").startswith("test.toml:spam.enabled: expected a boolean")
