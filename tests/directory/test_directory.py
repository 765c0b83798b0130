"""The directory over a real metadata store: domains, accounts, aliases, groups, logins."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserve.core.mailcore import MailCore
from mailserve.directory.directory import (
    AlreadyExists,
    AuthenticationFailed,
    Directory,
    DirectoryError,
    InvalidValue,
    NotFound,
    TooManyFailures,
)
from mailserve.directory.passwords import PasswordHashing
from mailserve.directory.throttle import AuthThrottle

FAST = PasswordHashing(time_cost=1, memory_cost=1024)


@pytest.fixture
def directory(metadata, blobs):
    d = Directory(metadata, MailCore(metadata, blobs), hashing=FAST, throttle=AuthThrottle(max_failures=3))
    d.add_domain("example.test")
    d.add_domain("Other.Example")
    return d


def test_domains(directory):
    assert [x.name for x in directory.list_domains()] == ["example.test", "other.example"]
    assert directory.is_local_domain("EXAMPLE.test.")
    assert not directory.is_local_domain("nowhere.test")
    with pytest.raises(AlreadyExists):
        directory.add_domain("example.test")
    with pytest.raises(InvalidValue):
        directory.add_domain("not a domain")
    with pytest.raises(NotFound):
        directory.get_domain("nowhere.test")


def test_account_lifecycle(directory):
    alice = directory.add_account("alice", password="correct horse", addresses=["Alice@Example.test"],
                                  display_name="Alice", quota_bytes=10_000)
    assert alice.addresses == ("alice@example.test",)
    assert directory.get_account("alice").id == alice.id
    assert directory.get_account("ALICE@example.test").id == alice.id
    assert directory.core.find_mailbox(alice.id, "INBOX").name == "INBOX"
    assert directory.core.get_quota(alice.id).bytes_limit == 10_000
    with pytest.raises(AlreadyExists):
        directory.add_account("alice", password="x" * 8)
    with pytest.raises(AlreadyExists):
        directory.add_account("alice2", password="x" * 8, addresses=["alice@example.test"])
    with pytest.raises(NotFound, match="add it first"):
        directory.add_account("carol", password="x" * 8, addresses=["carol@unknown.test"])
    # A refused add leaves nothing behind.
    with pytest.raises(NotFound):
        directory.get_account("carol")
    directory.set_quota("alice", 5)
    assert directory.core.get_quota(alice.id).bytes_limit == 5
    assert "password_hash" not in directory.get_account("alice").public()
    directory.remove_account("alice")
    with pytest.raises(NotFound):
        directory.get_account("alice")
    assert not directory.resolve_recipient("alice@example.test").found


def test_resolution_aliases_subaddress_catch_all_groups(directory):
    alice = directory.add_account("alice", password="pw-alice-1", addresses=["alice@example.test"])
    bob = directory.add_account("bob", password="pw-bob-12", addresses=["bob@example.test"])
    assert directory.resolve_recipient("alice@example.test").accounts == (alice.id,)
    tagged = directory.resolve_recipient("alice+lists@example.test")
    assert tagged.accounts == (alice.id,) and tagged.detail == "lists"
    assert not directory.resolve_recipient("nobody@example.test").found
    assert not directory.resolve_recipient("alice@nowhere.test").found
    directory.add_alias("team@example.test", ["alice@example.test", "bob@example.test", "ext@remote.test"])
    team = directory.resolve_recipient("team@example.test")
    assert team.accounts == (alice.id, bob.id) and team.remote == ("ext@remote.test",)
    # Alias loops terminate.
    directory.add_alias("loop1@example.test", ["loop2@example.test"])
    directory.add_alias("loop2@example.test", ["loop1@example.test", "bob@example.test"])
    assert directory.resolve_recipient("loop1@example.test").accounts == (bob.id,)
    directory.add_group("staff", "staff@other.example", ["alice@example.test", "bob@example.test"])
    assert directory.resolve_recipient("staff@other.example").accounts == (alice.id, bob.id)
    directory.set_catch_all("example.test", "bob@example.test")
    assert directory.resolve_recipient("anything@example.test").accounts == (bob.id,)
    directory.set_enabled("bob", False)
    assert directory.resolve_recipient("bob@example.test").accounts == ()
    assert directory.addresses_of(alice.id) == ("alice@example.test", "team@example.test", "staff@other.example")
    assert directory.addresses_of(bob.id) == ("bob@example.test",)  # disabled: reached by nothing


def test_remove_domain_refused_while_in_use(directory):
    directory.add_account("alice", password="pw-alice-1", addresses=["alice@other.example"])
    with pytest.raises(DirectoryError, match="--force"):
        directory.remove_domain("other.example")
    directory.remove_domain("other.example", force=True)
    assert directory.get_account("alice").addresses == ()


@pytest_twisted.inlineCallbacks
def test_authentication_and_throttle(directory):
    directory.add_account("alice", password="correct horse", addresses=["alice@example.test"])
    account = yield directory.authenticate("alice@example.test", "correct horse", "192.0.2.1")
    assert account.name == "alice"
    for attempt in range(3):
        with pytest.raises(AuthenticationFailed):
            yield directory.authenticate("alice", "wrong", "192.0.2.7")
    # Over budget: refused even with the right password, from that address only.
    with pytest.raises(TooManyFailures):
        yield directory.authenticate("alice", "correct horse", "192.0.2.7")
    assert (yield directory.authenticate("alice", "correct horse", "192.0.2.8")).name == "alice"
    with pytest.raises(AuthenticationFailed):
        yield directory.authenticate("nobody", "whatever", "192.0.2.9")
    directory.set_enabled("alice", False)
    with pytest.raises(AuthenticationFailed):
        yield directory.authenticate("alice", "correct horse", "192.0.2.10")


def test_unknown_user_costs_a_hash_check():
    """Unknown logins verify against a decoy hash: same work as a wrong password."""
    hashing = PasswordHashing(time_cost=1, memory_cost=1024)
    calls = []
    real = hashing._hasher

    class Recording:
        def verify(self, stored, password):
            calls.append(stored)
            return real.verify(stored, password)

    hashing._hasher = Recording()
    assert hashing.verify(None, "x") is False
    assert calls == [hashing._decoy]
    good = real.hash("right")
    assert hashing.verify(good, "right") is True and hashing.verify(good, "wrong") is False


def test_throttle_window():
    now = [0.0]
    throttle = AuthThrottle(max_failures=2, window=60, clock=lambda: now[0])
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.blocked("a") and not throttle.blocked("b")
    now[0] = 61
    assert not throttle.blocked("a")
