"""The ``mailserve`` command, run as a real subprocess against a real data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FAST_AUTH = """
[auth]
argon2_time_cost = 1
argon2_memory_cost = "64KiB"
argon2_parallelism = 1
"""


def run(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailserve.cli", *args],
        input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
    )


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "mailserve.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nhostname = "mail.example.test"\n'
                    f"[server.listener]\n{FAST_AUTH}")
    return str(path)


def ok(*args: str, **kw) -> str:
    result = run(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_domain_account_alias_round_trip(config):
    c = ["--config", config]
    assert "added domain example.test" in ok("domain", "add", "example.test", *c)
    ok("account", "add", "alice", "-a", "alice@example.test", "--quota", "1GiB",
       "--password-stdin", *c, stdin="a good password\n")
    shown = json.loads(ok("account", "show", "alice", "--json", *c))
    assert shown["addresses"] == ["alice@example.test"]
    assert shown["quota"]["bytes_limit"] == 1 << 30
    assert "password_hash" not in shown
    listed = json.loads(ok("account", "list", "--json", *c))
    assert [a["name"] for a in listed] == ["alice"]
    ok("alias", "add", "postmaster@example.test", "alice@example.test", *c)
    aliases = json.loads(ok("alias", "list", "--json", *c))
    assert aliases == [{"address": "postmaster@example.test", "targets": ["alice@example.test"]}]
    ok("group", "add", "team", "team@example.test", "alice@example.test", *c)
    assert "team@example.test" in ok("group", "list", *c)
    ok("account", "quota", "alice", "500MB", *c)
    assert json.loads(ok("account", "show", "alice", "--json", *c))["quota_bytes"] == 500_000_000
    ok("account", "passwd", "alice", "--password-stdin", *c, stdin="another password\n")
    ok("account", "disable", "alice", *c)
    assert json.loads(ok("account", "show", "alice", "--json", *c))["enabled"] is False
    domain = json.loads(ok("domain", "show", "example.test", "--json", *c))
    assert domain["accounts"] == ["alice"] and domain["aliases"] == ["postmaster@example.test"]
    ok("alias", "remove", "postmaster@example.test", *c)
    ok("account", "remove", "alice", *c)
    assert json.loads(ok("account", "list", "--json", *c)) == []


def test_clear_errors_and_nothing_changed(config):
    c = ["--config", config]
    ok("domain", "add", "example.test", *c)
    dup = run("domain", "add", "example.test", *c)
    assert dup.returncode == 1 and "domain already exists: example.test" in dup.stderr
    unknown = run("account", "show", "nobody", *c)
    assert unknown.returncode == 1 and "no such account: nobody" in unknown.stderr
    other = run("account", "add", "bob", "-a", "bob@elsewhere.test", "--password-stdin", *c,
                stdin="a good password\n")
    assert other.returncode == 1 and "mailserve domain add elsewhere.test" in other.stderr
    assert json.loads(ok("account", "list", "--json", *c)) == []
    short = run("account", "add", "bob", "--password-stdin", *c, stdin="short\n")
    assert short.returncode == 1 and "a password needs 8 to 1024 characters" in short.stderr
    bad_size = run("account", "quota", "bob", "lots", *c)
    assert bad_size.returncode == 2 and "try 500MB or 2GiB" in bad_size.stderr
    in_use = run("domain", "remove", "example.test", *c)
    assert in_use.returncode == 0  # no addresses yet
    missing = run("account", "list", "--config", config + ".nope")
    assert missing.returncode == 1 and "mailserve init" in missing.stderr


def test_init_creates_config_data_and_admin(tmp_path):
    out = ok("init", str(tmp_path / "site"), "--hostname", "mail.example.test")
    assert "administrator: admin  password: " in out
    password = out.split("password: ")[1].split()[0]
    assert len(password) >= 16
    config = tmp_path / "site" / "mailserve.toml"
    assert config.exists() and (tmp_path / "site" / "data" / "metadata").is_dir()
    assert ok("validate", "--config", str(config)).strip().endswith(": ok")
    again = run("init", str(tmp_path / "site"))
    assert again.returncode == 1 and "--force" in again.stderr
    admin = json.loads(ok("account", "show", "admin", "--json", "--config", str(config)))
    assert admin["role"] == "admin"


def test_validate_reports_every_mistake(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        "[server]\nhostnme = \"x.example\"\nmax_connections = \"many\"\n"
        "[server.listener.a]\nbind = \"127.0.0.1:99999\"\nprotocol = \"smtp\"\n"
    )
    result = run("validate", "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}:") for line in lines)
    text = "\n".join(lines)
    assert "server.hostnme" in text and "did you mean 'hostname'" in text
    assert "server.max_connections" in text
    assert "server.listener.a.bind" in text


def test_help_for_a_wrong_command():
    result = run("acount", "list")
    assert result.returncode == 2 and "invalid choice: 'acount'" in result.stderr


@pytest.mark.parametrize("module", ["mailserve.cli"])
def test_console_script_installed(module):
    from shutil import which

    exe = which("mailserve", path=os.path.dirname(sys.executable))
    assert exe, "the mailserve console script is installed next to the interpreter"


def test_dkim_generate_and_dns_records(config):
    c = ["--config", config]
    ok("domain", "add", "example.test", *c)
    rsa = json.loads(ok("dkim", "generate", "example.test", "--selector", "s1", "--json", *c))
    assert rsa["record"]["name"] == "s1._domainkey.example.test." and rsa["record"]["type"] == "TXT"
    assert rsa["record"]["value"].startswith("v=DKIM1; k=rsa; p=") and rsa["algorithm"] == "rsa-sha256"
    assert "private_key" not in rsa
    ed = ok("dkim", "generate", "example.test", "--algorithm", "ed25519", *c)
    assert "._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=ed25519; p=" in ed
    dup = run("dkim", "generate", "example.test", "--selector", "s1", *c)
    assert dup.returncode == 1 and "already has a DKIM key with selector 's1'" in dup.stderr
    nodomain = run("dkim", "generate", "nowhere.test", *c)
    assert nodomain.returncode == 1 and "no such domain: nowhere.test" in nodomain.stderr
    zone = ok("dns", "example.test", *c)
    assert "example.test. 3600 IN MX 10 mail.example.test." in zone
    assert "example.test. 3600 IN TXT \"v=spf1 mx -all\"" in zone
    assert "s1._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=rsa; p=" in zone
    assert "_dmarc.example.test. 3600 IN TXT \"v=DMARC1; p=quarantine" in zone
    records = json.loads(ok("dns", "example.test", "--json", *c))
    assert sum(r["type"] == "TXT" and "_domainkey" in r["name"] for r in records) == 2
    ok("dkim", "remove", "example.test", "s1", *c)
    assert [k["selector"] for k in json.loads(ok("dkim", "list", "--json", *c))] == [ed.split("selector ")[1].split(";")[0]]
    # Removing the domain removes its keys too (the service layer's one removal).
    ok("domain", "remove", "example.test", *c)
    assert json.loads(ok("dkim", "list", "--json", *c)) == []


def test_the_cli_and_the_api_are_one_implementation(tmp_path):
    """The same operation over the CLI and the REST API gives the same answer and the same refusals."""
    from tests.web.conftest import start_server_process, stop_server_process

    server = start_server_process(str(tmp_path), ("http",))
    try:
        config = tmp_path / "cli.toml"
        data_dir = tmp_path / "data"
        config.write_text(f'[server]\ndata_dir = "{data_dir}"\nhostname = "mail.example.test"\n'
                          f"[server.listener]\n{FAST_AUTH}")
        c = ["--config", str(config)]
        ok("domain", "add", "both.example.test", *c)
        ok("account", "add", "gil@both.example.test", "-a", "gil@both.example.test", "--password-stdin", *c,
           stdin="gil-password\n")
        ok("alias", "add", "info@both.example.test", "gil@both.example.test", *c)
        # What the CLI wrote, the API reads, in the same shape.
        cli_account = json.loads(ok("account", "show", "gil@both.example.test", "--json", *c))
        api_account = server.admin("GET", "/api/accounts/gil@both.example.test").json
        assert cli_account == api_account
        assert json.loads(ok("dns", "both.example.test", "--json", *c)) == \
            server.admin("GET", "/api/domains/both.example.test/dns").json
        assert json.loads(ok("alias", "show", "info@both.example.test", "--json", *c)) == \
            server.admin("GET", "/api/aliases/info@both.example.test").json
        # The same refusals: the last administrator stays, a domain in use is kept, bad input is refused.
        last = run("account", "remove", "admin", *c)
        assert last.returncode == 1 and "last enabled administrator" in last.stderr
        assert server.admin("DELETE", "/api/accounts/gil@both.example.test").status == 200
        disabled = run("account", "disable", "admin", *c)
        assert disabled.returncode == 1 and "last enabled administrator" in disabled.stderr
        in_use = run("domain", "remove", "both.example.test", *c)
        assert in_use.returncode == 1 and "still has 1 address" in in_use.stderr
        assert server.admin("DELETE", "/api/domains/both.example.test").status == 409
        bad = run("alias", "add", "x@elsewhere.example.test", "gil@both.example.test", *c)
        refused = server.admin("POST", "/api/aliases", {"address": "x@elsewhere.example.test",
                                                        "targets": ["gil@both.example.test"]})
        assert bad.returncode == 1 and refused.status in (400, 404)
        assert refused.json["error"]["message"] in bad.stderr
    finally:
        stop_server_process(server)
