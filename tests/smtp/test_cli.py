"""``mailserve queue list|show|retry|delete`` against a real data directory."""

from __future__ import annotations

import json

import pytest

from mailserve import cli
from mailserve.smtp.cli import add_queue_commands
from mailserve.smtp.queue import QueuedRecipient, QueueEntry, QueueStore


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_EXTRA_COMMANDS", [add_queue_commands])
    path = tmp_path / "mailserve.toml"
    path.write_text(f'[server]\nhostname = "mail.example.test"\ndata_dir = "{tmp_path / "data"}"\n')
    return str(path)


def add_entries(config_file, count=2):
    from mailserve.config import load_config

    stores = cli.Stores(load_config(config_file))
    try:
        blob = stores.blobs.put(b"Subject: queued\r\n\r\nbody\r\n")
        ids = []
        for n in range(count):
            entry = QueueEntry(0, blob, 25, f"sender{n}@example.test",
                               [QueuedRecipient(f"rcpt{n}@remote.test", reply="451 4.4.1 connection refused")],
                               created=1_700_000_000.0, next_attempt=4_000_000_000.0, attempts=3,
                               last_error="451 4.4.1 connection refused")
            ids.append(stores.metadata.write_sync(lambda txn, e=entry: QueueStore.add_txn(txn, e)).id)
        return ids, blob
    finally:
        stores.close()


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_show(config_file, capsys):
    ids, _ = add_entries(config_file)
    code, out, _ = run(capsys, "queue", "list", "--config", config_file)
    assert code == 0
    assert "<sender0@example.test>" in out and "<sender1@example.test>" in out and "451 4.4.1" in out
    code, out, _ = run(capsys, "queue", "list", "--config", config_file, "--json")
    assert [e["id"] for e in json.loads(out)] == ids
    code, out, _ = run(capsys, "queue", "show", str(ids[0]), "--config", config_file)
    assert "pending   <rcpt0@remote.test>  (451 4.4.1 connection refused)" in out
    assert "attempts:     3" in out


def test_retry_makes_due_now(config_file, capsys):
    ids, _ = add_entries(config_file)
    code, out, _ = run(capsys, "queue", "retry", str(ids[1]), "--config", config_file)
    assert code == 0 and "1 message(s)" in out
    code, out, _ = run(capsys, "queue", "show", str(ids[1]), "--config", config_file, "--json")
    assert json.loads(out)["next_attempt"] < 4_000_000_000.0
    code, out, _ = run(capsys, "queue", "retry", "--all", "--config", config_file)
    assert "2 message(s)" in out


def test_delete_releases_the_bytes_with_the_last_reference(config_file, capsys, tmp_path):
    from mailserve.storage.filesystem_blobs import FilesystemBlobStore

    ids, blob = add_entries(config_file)
    blobs = FilesystemBlobStore(str(tmp_path / "data" / "blobs"))
    assert run(capsys, "queue", "delete", str(ids[0]), "--config", config_file)[0] == 0
    assert blobs.exists(blob)  # still used by the second entry
    assert run(capsys, "queue", "delete", str(ids[1]), "--config", config_file)[0] == 0
    assert not blobs.exists(blob)
    code, out, _ = run(capsys, "queue", "list", "--config", config_file)
    assert code == 0 and "(none)" in out


def test_unknown_id_is_a_clear_error(config_file, capsys):
    code, _, err = run(capsys, "queue", "show", "99", "--config", config_file)
    assert code == 1 and "no queued message 99" in err
    code, _, err = run(capsys, "queue", "retry", "--config", config_file)
    assert code == 1 and "give a message id or --all" in err
