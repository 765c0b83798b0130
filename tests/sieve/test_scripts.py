"""SieveScripts: each account's scripts and its active one, in a real metadata store."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserve.core import keys
from mailserve.sieve.scripts import (
    InvalidScriptName,
    NoSuchScript,
    ScriptExists,
    ScriptIsActive,
    ScriptTooLarge,
    SieveScripts,
    TooManyScripts,
    check_script_name,
)

LIMITS = {"max_scripts": 3, "max_size": 100}


@pytest.fixture
def scripts(metadata):
    return SieveScripts(metadata)


@pytest_twisted.inlineCallbacks
def test_put_list_get_and_activate(scripts):
    assert scripts.list_scripts(1) == []
    assert scripts.active_script(1) is None
    yield scripts.put_script(1, "b", "keep;", **LIMITS)
    yield scripts.put_script(1, "a", "discard;", **LIMITS)
    assert scripts.list_scripts(1) == [("a", False), ("b", False)]
    yield scripts.set_active(1, "b")
    assert scripts.list_scripts(1) == [("a", False), ("b", True)]
    assert scripts.active_script(1) == ("b", "keep;")
    # Replacing the active script's text changes what delivery runs.
    yield scripts.put_script(1, "b", "stop;", **LIMITS)
    assert scripts.active_script(1) == ("b", "stop;")
    yield scripts.set_active(1, "")
    assert scripts.active_script(1) is None
    assert scripts.get_script(1, "a") == "discard;"
    # Another account sees none of it.
    assert scripts.list_scripts(2) == []
    with pytest.raises(NoSuchScript):
        scripts.get_script(2, "a")


@pytest_twisted.inlineCallbacks
def test_active_name_has_its_own_key(scripts, metadata):
    """The active script's name lives under keys.sieve_active, never among the script keys."""
    yield scripts.put_script(1, "vacation", "keep;", **LIMITS)
    yield scripts.set_active(1, "vacation")

    def stored(txn):
        script_keys = [key for key, _ in txn.scan(keys.sieve_scripts_prefix(1))]
        return script_keys, txn.get(keys.sieve_active(1))

    script_keys, active = metadata.read(stored)
    assert script_keys == [keys.sieve_script(1, "vacation")]
    assert active == b"vacation"
    assert not keys.sieve_active(1).startswith(keys.sieve_scripts_prefix(1))
    yield scripts.set_active(1, "")
    assert metadata.read(lambda txn: txn.get(keys.sieve_active(1))) is None


@pytest_twisted.inlineCallbacks
def test_active_name_stored_by_earlier_versions_is_read_then_migrated(scripts, metadata):
    """Early versions kept the active name under the script key of the empty name."""
    yield scripts.put_script(1, "old", "keep;", **LIMITS)
    yield scripts.put_script(1, "new", "discard;", **LIMITS)
    yield metadata.write(lambda txn: txn.put(keys.sieve_script(1, ""), b"old"))
    assert scripts.list_scripts(1) == [("new", False), ("old", True)]  # not listed as a script
    assert scripts.active_script(1) == ("old", "keep;")
    with pytest.raises(ScriptIsActive):
        yield scripts.delete_script(1, "old")
    yield scripts.set_active(1, "new")
    assert metadata.read(lambda txn: txn.get(keys.sieve_script(1, ""))) is None
    assert scripts.active_script(1) == ("new", "discard;")
    yield scripts.delete_script(1, "old")
    assert scripts.list_scripts(1) == [("new", True)]


@pytest_twisted.inlineCallbacks
def test_active_script_cannot_be_deleted(scripts):
    yield scripts.put_script(1, "main", "keep;", **LIMITS)
    yield scripts.set_active(1, "main")
    with pytest.raises(ScriptIsActive):
        yield scripts.delete_script(1, "main")
    yield scripts.set_active(1, "")
    yield scripts.delete_script(1, "main")
    assert scripts.list_scripts(1) == []
    with pytest.raises(NoSuchScript):
        yield scripts.delete_script(1, "main")
    with pytest.raises(NoSuchScript):
        yield scripts.set_active(1, "main")


@pytest_twisted.inlineCallbacks
def test_rename_keeps_the_active_mark_and_refuses_clashes(scripts):
    yield scripts.put_script(1, "one", "keep;", **LIMITS)
    yield scripts.put_script(1, "two", "discard;", **LIMITS)
    yield scripts.set_active(1, "one")
    yield scripts.rename_script(1, "one", "uno")
    assert scripts.active_script(1) == ("uno", "keep;")
    assert scripts.list_scripts(1) == [("two", False), ("uno", True)]
    with pytest.raises(ScriptExists):
        yield scripts.rename_script(1, "uno", "two")
    with pytest.raises(NoSuchScript):
        yield scripts.rename_script(1, "one", "three")


@pytest_twisted.inlineCallbacks
def test_quotas_on_number_and_size(scripts):
    for name in ("a", "b", "c"):
        yield scripts.put_script(1, name, "keep;", **LIMITS)
    with pytest.raises(TooManyScripts):
        yield scripts.put_script(1, "d", "keep;", **LIMITS)
    with pytest.raises(TooManyScripts):
        scripts.check_space(1, "d", 10, **LIMITS)
    scripts.check_space(1, "a", 10, **LIMITS)  # replacing does not add a script
    yield scripts.put_script(1, "a", "discard;", **LIMITS)
    with pytest.raises(ScriptTooLarge):
        scripts.check_space(1, "a", 101, **LIMITS)
    with pytest.raises(ScriptTooLarge):
        scripts.put_script(1, "a", "#" * 101, **LIMITS)
    # The active marker is not counted as a script.
    yield scripts.set_active(1, "a")
    scripts.check_space(1, "c", 10, **LIMITS)
    assert len(scripts.list_scripts(1)) == 3


@pytest.mark.parametrize("name", ["", "a\x00b", "tab\there", "line\u2028sep", "\x85", "x" * 129, "\ud800"])
def test_invalid_script_names(name):
    with pytest.raises(InvalidScriptName):
        check_script_name(name)


def test_names_are_normalised_to_nfc():
    assert check_script_name("cafe\u0301") == "caf\u00e9"
    assert check_script_name("Räume & Filter") == "Räume & Filter"
