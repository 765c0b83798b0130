"""A real server with POP3 listeners and a populated INBOX, for the POP3 tests."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.e2e.harness import add_user, make_config, start_server

PASSWORD = "correct horse battery"


def sample_message(n: int, body_lines: int = 5) -> bytes:
    body = "".join(f"line {i} of message {n}\r\n" for i in range(1, body_lines + 1))
    return (
        f"From: sender{n}@example.org\r\nTo: alice@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\n\r\n{body}"
    ).encode()


class POP3Server:
    """A started server, its POP3 addresses and one user with mail."""

    def __init__(self, server, account) -> None:
        self.server = server
        self.account = account
        self.host, self.port = server.address("pop3")
        self.tls_port = server.port("pop3s")
        self.plain_port = server.port("pop3-strict")

    @property
    def core(self):
        return self.server.core

    def inbox(self):
        return self.core.find_mailbox(self.account.id, "INBOX")

    def inbox_uids(self) -> list[int]:
        return [uid for uid, _ in self.core.mailbox_uids(self.account.id, self.inbox().id)]

    def append(self, raw: bytes, keywords=()):
        """Append to INBOX; a Deferred firing once the message is committed."""
        return self.core.append(self.account.id, self.inbox().id, raw, keywords)


@pytest.fixture
def pop3_server(tmp_path):
    bind = "127.0.0.1:0"
    listeners = {
        # allow_plaintext_auth: USER/PASS before TLS, as fetchmail and poplib tests use it.
        "pop3": {"protocol": "pop3", "bind": bind, "allow_plaintext_auth": True},
        "pop3s": {"protocol": "pop3", "bind": bind, "tls": {"implicit": True}},
        # The production default: passwords only after STLS.
        "pop3-strict": {"protocol": "pop3", "bind": bind},
    }
    config = make_config(
        tmp_path, (), server={"listener": listeners},
        pop3={"auth_failure_delay": 0, "max_auth_failures": 3},
    )
    server = start_server(tmp_path, config=config)
    account = pytest_twisted.blockon(add_user(server, "alice@example.test", PASSWORD))
    for n in range(1, 4):
        pytest_twisted.blockon(server.core.append(account.id, server.core.find_mailbox(account.id, "INBOX").id,
                                                  sample_message(n)))
    yield POP3Server(server, account)
    pytest_twisted.blockon(server.stopService())
