"""Start real mail servers for tests: real listeners on 127.0.0.1 ephemeral ports, real stores.

Usage in a pytest-twisted test::

    server = yield start_server(tmp_path, ["imap", "smtp"])
    yield add_user(server, "alice@example.test", "secret-password")
    host, port = server.address("imap")
    ...  # drive it with imaplib/smtplib in a thread (deferToThread) so the reactor keeps serving
    yield server.stopService()
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mailserve.config import Config
from mailserve.service import MailServer
from tests.dnsfixture import DNSFixtureServer

#: Argon2 as cheap as it goes: tests log in hundreds of times.
FAST_AUTH = {"argon2_time_cost": 1, "argon2_memory_cost": "64KiB", "argon2_parallelism": 1,
             "max_failures_per_ip": 1000}

#: Listener id -> its table; ids double as protocol names where they are one.
LISTENERS: dict[str, dict[str, Any]] = {
    "smtp": {"protocol": "smtp"},
    "submission": {"protocol": "submission", "allow_plaintext_auth": True},
    "submissions": {"protocol": "submission", "tls": {"implicit": True}},
    "imap": {"protocol": "imap", "allow_plaintext_auth": True},
    "imaps": {"protocol": "imap", "tls": {"implicit": True}},
    "pop3": {"protocol": "pop3", "allow_plaintext_auth": True},
    "pop3s": {"protocol": "pop3", "tls": {"implicit": True}},
    "managesieve": {"protocol": "managesieve", "allow_plaintext_auth": True},
    "http": {"protocol": "http"},
}


class _EmptyZone:
    """One authoritative DNS server per test process with no records at all.

    Test servers resolve through it unless a test gives its own ``dns`` table: every name is
    NXDOMAIN at once, so mail authentication and the spam filter run their real lookups and
    no test asks the machine's resolver (or the internet).
    """

    server: DNSFixtureServer | None = None

    @classmethod
    def address(cls) -> str:
        if cls.server is None:
            cls.server = DNSFixtureServer().start()
        return f"{cls.server.host}:{cls.server.port}"


def make_config(tmp_path, listeners=(), **sections: dict[str, Any]) -> Config:
    """A config with the named listeners on ephemeral ports; ``sections`` override tables."""
    data: dict[str, Any] = {
        "dns": {"nameservers": [_EmptyZone.address()]},
        "server": {
            "hostname": "mail.example.test",
            "data_dir": str(tmp_path / "data"),
            "listener": {},
        },
        "auth": dict(FAST_AUTH),
        "storage": {"index": {"commit_interval": "50ms"}},
    }
    for name in listeners:
        table = dict(LISTENERS[name])
        table["bind"] = "127.0.0.1:0"
        data["server"]["listener"][name] = table
    for key, value in sections.items():
        merged = dict(data.get(key, {}))
        merged.update(value)
        data[key] = merged
    return Config.from_dict(data, source="<test>")


class TestServer(MailServer):
    __test__ = False  # a server, not a test class
    def address(self, listener_id: str) -> tuple[str, int]:
        return self.listening()[listener_id][0]

    def port(self, listener_id: str) -> int:
        return self.address(listener_id)[1]


def start_server(tmp_path, listeners=(), config: Config | None = None, **sections) -> TestServer:
    """Start a server (synchronously: binding happens in startService)."""
    server = TestServer(config or make_config(tmp_path, listeners, **sections))
    server.startService()
    return server


@defer.inlineCallbacks
def add_user(server: MailServer, address: str, password: str, quota_bytes: int = 0, **kwargs):
    """Add ``address``'s domain if needed, then an account whose login is the address."""
    domain = address.rpartition("@")[2]
    if not server.directory.is_local_domain(domain):
        yield server.directory.add_domain(domain)
    account = yield server.directory.add_account(
        address, password=password, addresses=[address], quota_bytes=quota_bytes, **kwargs
    )
    return account
