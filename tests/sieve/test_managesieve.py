"""ManageSieve (RFC 5804) over real sockets: a line-level client, and sieve-connect end to end."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import threads

from mailserve.sieve import SIEVE_CAPABILITY
from mailserve.sieve.managesieve import CommandReader, ProtocolError, String, quoted
from mailserve.sieve.scripts import SieveScripts
from tests.e2e.harness import add_user, make_config, start_server

USER = "alice@example.test"
PASSWORD = "sieve-password-1"
GOOD_SCRIPT = 'require ["fileinto", "imap4flags"];\r\nif header :contains "subject" "[list]" {\r\n' \
              '  addflag "\\\\Flagged";\r\n  fileinto "Lists";\r\n}\r\n'
BAD_SCRIPT = 'require "fileinto";\r\nif header :contains "subject" "x" {\r\n  fileinto "Junk"\r\n}\r\n'
#: sieve-connect is the Debian package of that name; the end-to-end test fails without it.
SIEVE_CONNECT = shutil.which("sieve-connect") or "sieve-connect"


def plain(user: str = USER, password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def literal(text: str) -> bytes:
    data = text.encode()
    return b"{%d+}\r\n" % len(data) + data


class Client:
    """Sends raw commands; reads responses up to the final OK / NO / BYE line."""

    def __init__(self, host: str, port: int, tls: bool = False) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        if tls:
            self.sock = tls_context().wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.greeting = self.response()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def command(self, data: bytes | str) -> list[bytes]:
        if isinstance(data, str):
            data = data.encode()
        self.send(data + b"\r\n")
        return self.response()

    def response(self) -> list[bytes]:
        """Every line of one response, literals inlined; the status line last."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("connection closed")
            line = line.rstrip(b"\r\n")
            match = re.fullmatch(rb"\{(\d+)\}", line)
            if match:
                line = self.file.read(int(match.group(1)))
                self.file.readline()
            lines.append(line)
            if re.match(rb"(OK|NO|BYE)\b", line):
                return lines

    def starttls(self) -> list[bytes]:
        assert self.command("STARTTLS")[-1].startswith(b"OK")
        self.sock = tls_context().wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        return self.response()

    def login(self) -> None:
        assert self.command(f'AUTHENTICATE "PLAIN" "{plain()}"')[-1] == b'OK "Logged in"'

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return context


def capabilities(lines: list[bytes]) -> dict[str, str | None]:
    caps = {}
    for line in lines[:-1]:
        parts = re.findall(rb'"((?:[^"\\]|\\.)*)"', line)
        caps[parts[0].decode()] = parts[1].decode() if len(parts) > 1 else None
    return caps


class SieveServer:
    def __init__(self, server, account) -> None:
        self.server = server
        self.account = account
        self.host, self.port = server.address("managesieve")
        self.strict_port = server.port("managesieve-strict")
        self.scripts = SieveScripts(server.metadata)

    def client(self, port: int | None = None, login: bool = True) -> Client:
        client = Client(self.host, port or self.port)
        if login:
            client.login()
        return client


@pytest.fixture
def sieve_server(tmp_path):
    bind = "127.0.0.1:0"
    listeners = {
        "managesieve": {"protocol": "managesieve", "bind": bind, "allow_plaintext_auth": True},
        "managesieve-strict": {"protocol": "managesieve", "bind": bind},
    }
    config = make_config(
        tmp_path, (), server={"listener": listeners},
        managesieve={"max_scripts": 3, "max_script_size": "2KiB", "max_auth_failures": 2},
        auth={"failure_delay": 0},
    )
    server = start_server(tmp_path, config=config)
    account = pytest_twisted.blockon(add_user(server, USER, PASSWORD))
    yield SieveServer(server, account)
    pytest_twisted.blockon(server.stopService())


def in_thread(fn, *args):
    return threads.deferToThread(fn, *args)


# -- the command reader ---------------------------------------------------------------------------

def read_all(data: bytes, max_literal: int = 100) -> list:
    reader = CommandReader(max_literal)
    reader.feed(data)
    commands = []
    while True:
        try:
            tokens = reader.next_command()
        except ProtocolError as e:
            commands.append(str(e))
            continue
        if tokens is None:
            return commands
        commands.append(tokens)


def test_reader_tokens_quoted_strings_and_literals():
    commands = read_all(b'PUTSCRIPT "a \\"b\\" \\\\" {5+}\r\nkeep;\r\nNOOP\r\nRENAMESCRIPT {1}\r\nx {1+}\r\ny\r\n')
    assert [[t.value for t in c] for c in commands] == [
        ["PUTSCRIPT", b'a "b" \\', b"keep;"], ["NOOP"], ["RENAMESCRIPT", b"x", b"y"]]


def test_reader_skips_oversized_literals_and_stays_in_step():
    commands = read_all(b"PUTSCRIPT \"a\" {200+}\r\n" + b"x" * 200 + b"\r\nNOOP\r\n", max_literal=100)
    assert commands[0][2] == String(b"", too_large=True)
    assert commands[1][0].value == "NOOP"


def test_reader_reports_malformed_commands():
    assert read_all(b'NOOP "unterminated\r\nNOOP "bad \\n escape"\r\nNOOP {x}\r\nNOOP (\r\n') == [
        "unterminated quoted string", "invalid escape in quoted string", "invalid literal",
        "invalid characters in command"]
    assert read_all(b"A " * 5000 + b"\r\n") == ["line too long"]


def test_reader_waits_for_a_split_literal():
    reader = CommandReader(100)
    reader.feed(b"CHECKSCRIPT {9+}\r\nkeep")
    assert reader.next_command() is None
    reader.feed(b"; #ab\r\n")
    assert reader.next_command()[1].value == b"keep; #ab"


def test_reply_strings_quote_or_use_literals():
    assert quoted('say "hi" \\') == '"say \\"hi\\" \\\\"'
    assert quoted("two\r\nlines") == "{10}\r\ntwo\r\nlines"


# -- greeting, capabilities, TLS ----------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_greeting_lists_capabilities(sieve_server):
    def client():
        c = sieve_server.client(login=False)
        greeting = c.greeting
        again = c.command("CAPABILITY")
        c.login()
        after = c.command("CAPABILITY")
        c.close()
        return greeting, again, after

    greeting, again, after = yield in_thread(client)
    caps = capabilities(greeting)
    assert caps["SIEVE"] == SIEVE_CAPABILITY  # exactly what the interpreter implements
    assert caps["SASL"] == "PLAIN LOGIN"
    assert caps["IMPLEMENTATION"] == "mailserve" and caps["VERSION"] == "1.0"
    assert caps["MAXREDIRECTS"] == "4"
    assert "STARTTLS" in caps and "UNAUTHENTICATE" in caps and "OWNER" not in caps
    assert greeting[-1] == b'OK "mailserve ManageSieve ready"'
    assert capabilities(again) == caps and again[-1] == b'OK "Capability completed"'
    assert capabilities(after)["OWNER"] == USER
    assert "STARTTLS" not in capabilities(after)


@pytest_twisted.inlineCallbacks
def test_starttls_required_for_authentication_on_a_strict_listener(sieve_server):
    def client():
        c = sieve_server.client(sieve_server.strict_port, login=False)
        before = capabilities(c.greeting)
        refused = c.command(f'AUTHENTICATE "PLAIN" "{plain()}"')
        after_tls = c.starttls()
        again = c.command("STARTTLS")
        c.login()
        listed = c.command("LISTSCRIPTS")
        c.close()
        return before, refused, after_tls, again, listed

    before, refused, after_tls, again, listed = yield in_thread(client)
    assert before["SASL"] == "" and "STARTTLS" in before
    assert refused[-1].startswith(b"NO (ENCRYPT-NEEDED)")
    # RFC 5804 §2.2: the capabilities are sent again once TLS is up.
    assert capabilities(after_tls)["SASL"] == "PLAIN LOGIN" and "STARTTLS" not in capabilities(after_tls)
    assert after_tls[-1].startswith(b"OK")
    assert again[-1].startswith(b"NO")
    assert listed == [b'OK "Listscripts completed"']


@pytest_twisted.inlineCallbacks
def test_starttls_discards_pipelined_cleartext(sieve_server):
    def client():
        c = Client(sieve_server.host, sieve_server.strict_port)
        c.send(b"STARTTLS\r\nLOGOUT\r\n")
        assert c.response()[-1].startswith(b"OK")
        c.sock = tls_context().wrap_socket(c.sock, server_hostname="localhost")
        c.file = c.sock.makefile("rb")
        capabilities_again = c.response()
        noop = c.command("NOOP")  # still connected: the injected LOGOUT was not obeyed
        c.close()
        return capabilities_again, noop

    capabilities_again, noop = yield in_thread(client)
    assert capabilities_again[-1] == b'OK "TLS negotiation successful"'
    assert noop == [b'OK "Done"']


# -- authentication ------------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_authenticate_forms_and_failures(sieve_server):
    def client():
        c = sieve_server.client(login=False)
        out = {"unsupported": c.command('AUTHENTICATE "DIGEST-MD5"'),
               "listscripts_first": c.command("LISTSCRIPTS")}
        c.send(b'AUTHENTICATE "PLAIN"\r\n')
        out["challenge"] = c.file.readline()
        out["cancel"] = c.command('"*"')
        c.send(b'AUTHENTICATE "PLAIN"\r\n')
        c.file.readline()
        out["continued"] = c.command(literal(plain()))  # the response as a literal
        out["unauthenticate"] = c.command("UNAUTHENTICATE")
        out["after_unauth"] = c.command("LISTSCRIPTS")
        own = base64.b64encode(f"{USER.upper()}\0{USER}\0{PASSWORD}".encode()).decode()
        out["own_authzid"] = c.command(f'AUTHENTICATE "PLAIN" "{own}"')
        c.command("UNAUTHENTICATE")
        out["bad_base64"] = c.command('AUTHENTICATE "PLAIN" "not*base64"')
        proxy = base64.b64encode(f"bob@example.test\0{USER}\0{PASSWORD}".encode()).decode()
        out["proxy"] = c.command(f'AUTHENTICATE "PLAIN" "{proxy}"')
        out["wrong"] = c.command(f'AUTHENTICATE "PLAIN" "{plain(password="nope")}"')
        out["bye"] = c.response()
        out["closed"] = c.file.readline()
        c.close()
        return out

    out = yield in_thread(client)
    assert out["unsupported"] == [b'NO "Unsupported authentication mechanism"']
    assert out["listscripts_first"] == [b'NO "LISTSCRIPTS: Log in first"']
    assert out["challenge"] == b'""\r\n'
    assert out["cancel"] == [b'NO "Authentication cancelled"']
    assert out["continued"] == [b'OK "Logged in"']
    assert out["unauthenticate"] == [b'OK "Logged out"']
    assert out["after_unauth"][-1].startswith(b"NO")
    assert out["own_authzid"] == [b'OK "Logged in"']
    assert out["bad_base64"][-1].startswith(b"NO (SASL)")
    # A valid password with an authzid naming someone else is a failed login (RFC 4616 §2).
    assert out["proxy"] == [b'NO "Not authorized to act as that user"']
    assert out["wrong"] == [b'NO "Invalid user name or password"']
    assert out["bye"] == [b'BYE "Too many failed authentications"']
    assert out["closed"] == b""


@pytest_twisted.inlineCallbacks
def test_authenticate_login_mechanism(sieve_server):
    def client():
        c = sieve_server.client(login=False)
        c.send(b'AUTHENTICATE "LOGIN"\r\n')
        prompts = [c.file.readline()]
        c.send(b'"' + base64.b64encode(USER.encode()) + b'"\r\n')
        prompts.append(c.file.readline())
        done = c.command('"' + base64.b64encode(PASSWORD.encode()).decode() + '"')
        listing = c.command("LISTSCRIPTS")
        c.close()
        return prompts, done, listing

    prompts, done, listing = yield in_thread(client)
    assert prompts == [b'"VXNlcm5hbWU6"\r\n', b'"UGFzc3dvcmQ6"\r\n']  # "Username:", "Password:"
    assert done == [b'OK "Logged in"']
    assert listing[-1].startswith(b"OK")


@pytest_twisted.inlineCallbacks
def test_unauthenticate_and_logout(sieve_server):
    """RFC 5804 §2.14: back to the non-authenticated state; §2.3: LOGOUT answers OK, then closes."""

    def client():
        c = sieve_server.client()
        out = {"before": c.command("CAPABILITY"), "unauth": c.command("UNAUTHENTICATE"),
               "after": c.command("CAPABILITY"), "list": c.command("LISTSCRIPTS"),
               "again": c.command("UNAUTHENTICATE")}
        c.login()
        out["list_again"] = c.command("LISTSCRIPTS")
        out["logout"] = c.command("LOGOUT")
        out["closed"] = c.file.readline()
        c.close()
        return out

    out = yield in_thread(client)
    assert capabilities(out["before"])["OWNER"] == USER and capabilities(out["before"])["SASL"] == ""
    assert out["unauth"] == [b'OK "Logged out"']
    assert "OWNER" not in capabilities(out["after"]) and capabilities(out["after"])["SASL"] == "PLAIN LOGIN"
    assert out["list"] == [b'NO "LISTSCRIPTS: Log in first"']
    assert out["again"] == [b'NO "UNAUTHENTICATE: Log in first"']
    assert out["list_again"] == [b'OK "Listscripts completed"']
    assert out["logout"] == [b'OK "Logout completed"']
    assert out["closed"] == b""


# -- scripts ------------------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_script_lifecycle(sieve_server):
    def client():
        c = sieve_server.client()
        out = {
            "put": c.command(b'PUTSCRIPT "main" ' + literal(GOOD_SCRIPT)),
            "put2": c.command(b'PUTSCRIPT "other" ' + literal("keep;")),
            "list": c.command("LISTSCRIPTS"),
            "get": c.command('GETSCRIPT "main"'),
            "activate": c.command('SETACTIVE "main"'),
            "list_active": c.command("LISTSCRIPTS"),
            "delete_active": c.command('DELETESCRIPT "main"'),
            "rename": c.command('RENAMESCRIPT "main" "filters"'),
            "rename_clash": c.command('RENAMESCRIPT "filters" "other"'),
            "rename_missing": c.command('RENAMESCRIPT "nothing" "x"'),
            "get_missing": c.command('GETSCRIPT "main"'),
            "activate_missing": c.command('SETACTIVE "nothing"'),
        }
        out["active"] = sieve_server.scripts.active_script(sieve_server.account.id)
        out["deactivate"] = c.command('SETACTIVE ""')
        out["delete"] = c.command('DELETESCRIPT "filters"')
        out["list_end"] = c.command("LISTSCRIPTS")
        c.command("LOGOUT")
        c.close()
        return out

    out = yield in_thread(client)
    assert out["put"] == [b'OK "Script stored"'] and out["put2"] == [b'OK "Script stored"']
    assert out["list"] == [b'"main"', b'"other"', b'OK "Listscripts completed"']
    assert out["get"] == [GOOD_SCRIPT.encode(), b'OK "Getscript completed"']
    assert out["activate"] == [b'OK "Script activated"']
    assert out["list_active"][:2] == [b'"main" ACTIVE', b'"other"']
    assert out["delete_active"][-1].startswith(b"NO (ACTIVE)")
    assert out["rename"] == [b'OK "Script renamed"']
    assert out["rename_clash"][-1].startswith(b"NO (ALREADYEXISTS)")
    assert out["rename_missing"][-1].startswith(b"NO (NONEXISTENT)")
    assert out["get_missing"][-1].startswith(b"NO (NONEXISTENT)")
    assert out["activate_missing"][-1].startswith(b"NO (NONEXISTENT)")
    # Delivery sees the renamed script as the active one.
    assert out["active"] == ("filters", GOOD_SCRIPT)
    assert out["deactivate"] == [b'OK "No script is active now"']
    assert out["delete"] == [b'OK "Script deleted"']
    assert out["list_end"] == [b'"other"', b'OK "Listscripts completed"']


@pytest_twisted.inlineCallbacks
def test_errors_are_reported_with_line_and_column(sieve_server):
    def client():
        c = sieve_server.client()
        out = {
            "put": c.command(b'PUTSCRIPT "bad" ' + literal(BAD_SCRIPT)),
            "check_bad": c.command(b"CHECKSCRIPT " + literal(BAD_SCRIPT)),
            "check_unknown": c.command(b"CHECKSCRIPT " + literal('require "enotify";\r\nkeep;\r\n')),
            "check_good": c.command(b"CHECKSCRIPT " + literal(GOOD_SCRIPT)),
            "not_utf8": c.command(b'CHECKSCRIPT {3+}\r\n\xff\xfe;'),
            "list": c.command("LISTSCRIPTS"),
        }
        c.close()
        return out

    out = yield in_thread(client)
    for key in ("put", "check_bad"):
        [line] = out[key]
        assert re.fullmatch(rb'NO "line 4, column \d+: .+"', line), line
    assert re.fullmatch(rb'NO "line 1, column \d+: .*enotify.*"', out["check_unknown"][0])
    assert out["check_good"] == [b'OK "Script is valid"']
    assert out["not_utf8"] == [b'NO "script is not valid UTF-8"']
    assert out["list"] == [b'OK "Listscripts completed"']  # the bad script was not stored


@pytest_twisted.inlineCallbacks
def test_quotas_on_number_and_size_of_scripts(sieve_server):
    big = "#" * 3000 + "\r\nkeep;\r\n"

    def client():
        c = sieve_server.client()
        out = {"space": c.command('HAVESPACE "a" 100'),
               "space_big": c.command('HAVESPACE "a" 999999'),
               "space_bad": c.command('HAVESPACE "a" lots')}
        for name in ("a", "b", "c"):
            assert c.command(f'PUTSCRIPT "{name}" ' + '{5+}\r\nkeep;')[-1].startswith(b"OK")
        out["fourth"] = c.command(b'PUTSCRIPT "d" ' + literal("keep;"))
        out["space_fourth"] = c.command('HAVESPACE "d" 10')
        out["replace"] = c.command(b'PUTSCRIPT "a" ' + literal("discard;"))
        out["too_big"] = c.command(b'PUTSCRIPT "a" ' + literal(big))
        out["in_step"] = c.command('NOOP "still-here"')
        out["get"] = c.command('GETSCRIPT "a"')
        c.close()
        return out

    out = yield in_thread(client)
    assert out["space"] == [b'OK "Putscript would succeed"']
    assert out["space_big"][-1].startswith(b"NO (QUOTA/MAXSIZE)")
    assert out["space_bad"] == [b'NO "Invalid size"']
    assert out["fourth"][-1].startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert out["space_fourth"][-1].startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert out["replace"] == [b'OK "Script stored"']
    assert out["too_big"][-1].startswith(b"NO (QUOTA/MAXSIZE)")
    assert out["in_step"] == [b'OK (TAG "still-here") "Done"']
    assert out["get"][0] == b"discard;"


@pytest_twisted.inlineCallbacks
def test_script_names_are_checked(sieve_server):
    def client():
        c = sieve_server.client()
        control = c.command(b'PUTSCRIPT "a\x01b" ' + literal("keep;"))
        long_name = c.command(b'PUTSCRIPT "' + b"n" * 200 + b'" ' + literal("keep;"))
        unicode_name = c.command('PUTSCRIPT "Räume" '.encode() + literal("keep;"))
        listed = c.command("LISTSCRIPTS")
        c.close()
        return control, long_name, unicode_name, listed

    control, long_name, unicode_name, listed = yield in_thread(client)
    assert control[-1] == b'NO "script name contains a control character"'
    assert long_name[-1].startswith(b'NO "script name is longer than 128')
    assert unicode_name == [b'OK "Script stored"']
    assert listed[0] == '"Räume"'.encode()


@pytest_twisted.inlineCallbacks
def test_pipelined_commands_with_literals(sieve_server):
    def client():
        c = sieve_server.client()
        c.send(b'PUTSCRIPT "p" {5+}\r\nkeep;\r\nSETACTIVE "p"\r\nGETSCRIPT "p"\r\nNOOP "t"\r\n')
        replies = [c.response(), c.response(), c.response(), c.response()]
        c.close()
        return replies

    put, activate, get, noop = yield in_thread(client)
    assert put == [b'OK "Script stored"']
    assert activate == [b'OK "Script activated"']
    assert get == [b"keep;", b'OK "Getscript completed"']
    assert noop == [b'OK (TAG "t") "Done"']


@pytest_twisted.inlineCallbacks
def test_bad_input_gets_clear_errors_then_the_door(sieve_server):
    def client():
        c = sieve_server.client(login=False)
        out = {"unknown": c.command("FROBNICATE"), "syntax": c.command('NOOP "open'),
               "string_first": c.command('"NOOP"'), "args": c.command("CAPABILITY extra")}
        c.send(b"X" * 9000 + b"\r\n")
        out["long"] = c.response()
        out["closed"] = c.file.readline()
        c.close()
        return out

    out = yield in_thread(client)
    assert out["unknown"] == [b'NO "Unknown command"']
    assert out["syntax"] == [b'NO "Syntax error: unterminated quoted string"']
    assert out["string_first"] == [b'NO "Command name expected"']
    assert out["args"][-1].startswith(b'NO "Wrong arguments')
    assert out["long"] == [b'BYE "Line too long"']
    assert out["closed"] == b""


@pytest_twisted.inlineCallbacks
def test_idle_timeout_says_bye(tmp_path):
    listeners = {"managesieve": {"protocol": "managesieve", "bind": "127.0.0.1:0"}}
    server = start_server(tmp_path, config=make_config(
        tmp_path, (), server={"listener": listeners}, managesieve={"idle_timeout": 1}))
    try:
        def client():
            c = Client(*server.address("managesieve"))
            started = time.monotonic()
            bye = c.file.readline()
            waited = time.monotonic() - started
            c.close()
            return bye, waited

        bye, waited = yield in_thread(client)
        assert bye == b'BYE "Disconnected for inactivity"\r\n'
        assert 0.5 < waited < 5
    finally:
        yield server.stopService()


# -- sieve-connect end to end ----------------------------------------------------------------------------

def sieve_connect(sieve_server, *args: str) -> subprocess.CompletedProcess:
    """Run sieve-connect against the strict listener: STARTTLS, then AUTHENTICATE PLAIN."""
    read_end, write_end = os.pipe()
    os.write(write_end, PASSWORD.encode() + b"\n")
    os.close(write_end)
    try:
        return subprocess.run(
            [SIEVE_CONNECT, "--server", "127.0.0.1", "--port", str(sieve_server.strict_port),
             "--user", USER, "--passwordfd", str(read_end), "--notlsverify", "--noclearauth", *args],
            pass_fds=(read_end,), capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        os.close(read_end)


@pytest_twisted.inlineCallbacks
def test_sieve_connect_uploads_activates_lists_and_downloads(tmp_path, sieve_server):
    local = tmp_path / "filters.sieve"
    local.write_text(GOOD_SCRIPT.replace("\r\n", "\n"))
    bad = tmp_path / "bad.sieve"
    bad.write_text(BAD_SCRIPT.replace("\r\n", "\n"))
    downloaded = tmp_path / "downloaded.sieve"

    upload = yield in_thread(sieve_connect, sieve_server, "--upload", "--localsieve", str(local),
                             "--remotesieve", "filters")
    assert upload.returncode == 0, upload.stderr
    activate = yield in_thread(sieve_connect, sieve_server, "--activate", "--remotesieve", "filters")
    assert activate.returncode == 0, activate.stderr
    listing = yield in_thread(sieve_connect, sieve_server, "--list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split("\n")[0] == '"filters" ACTIVE'
    download = yield in_thread(sieve_connect, sieve_server, "--download", "--remotesieve", "filters",
                               "--localsieve", str(downloaded))
    assert download.returncode == 0, download.stderr
    assert downloaded.read_text() == local.read_text()
    # What delivery will run:
    assert sieve_server.scripts.active_script(sieve_server.account.id) == ("filters", local.read_text())

    rejected = yield in_thread(sieve_connect, sieve_server, "--upload", "--localsieve", str(bad),
                               "--remotesieve", "bad")
    assert rejected.returncode != 0
    assert re.search(r"line 4, column \d+", rejected.stdout + rejected.stderr)
    assert [name for name, _ in sieve_server.scripts.list_scripts(sieve_server.account.id)] == ["filters"]
