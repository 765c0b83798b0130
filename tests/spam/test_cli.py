"""``mailserve spam train|status``, run as a real subprocess against a real data directory.

The command is reached through ``mailserve.cli.main``, exactly as the console script reaches it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailserve.spam.cli import iter_messages
from tests.spam.conftest import HAM

DATA = Path(__file__).resolve().parent.parent / "data" / "spam"
RUNNER = (
    "import sys; from mailserve import cli; sys.exit(cli.main(sys.argv[1:]))"
)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "mailserve.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nhostname = "mail.example.test"\n'
                    '[server.listener]\n[auth]\nargon2_time_cost = 1\nargon2_memory_cost = "64KiB"\n'
                    "argon2_parallelism = 1\n")
    return str(path)


def test_train_from_mbox_eml_and_directory(config, tmp_path):
    c = ["--config", config]
    result = run("spam", "train", "--spam", str(DATA / "spam.mbox.gz"), "--json", *c)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"class": "spam", "learned": 600, "relearned": 0, "already": 0}
    maildir = tmp_path / "Maildir" / "cur"
    maildir.mkdir(parents=True)
    (maildir / "1.eml").write_bytes(HAM)
    (maildir / "2.eml").write_bytes(HAM.replace(b"report-1", b"report-2"))
    result = run("spam", "train", "--ham", str(tmp_path / "Maildir"), *c)
    assert result.returncode == 0, result.stderr
    assert "2 learned, 0 relearned, 0 already known as ham" in result.stdout
    # Training again is a no-op; as the other class, it is a correction.
    assert "0 learned, 0 relearned, 2 already" in run("spam", "train", "--ham", str(maildir), *c).stdout
    assert "1 relearned" in run("spam", "train", "--spam", str(maildir / "1.eml"), *c).stdout
    status = json.loads(run("spam", "status", "--json", *c).stdout)
    assert status == {"global": {"spam": 601, "ham": 1}}


def test_account_training_and_errors(config):
    c = ["--config", config]
    assert run("domain", "add", "example.test", *c).returncode == 0
    assert run("account", "add", "alice", "-a", "alice@example.test", "--password", "pw pw pw pw", *c).returncode == 0
    unknown = run("spam", "train", "--spam", "/nonexistent/file", *c)
    assert unknown.returncode == 1 and "no such file" in unknown.stderr
    nobody = run("spam", "train", "--spam", str(DATA / "spam.mbox.gz"), "--account", "nobody", *c)
    assert nobody.returncode == 1 and "nobody" in nobody.stderr
    both = run("spam", "train", "--spam", "--ham", "x", *c)
    assert both.returncode == 2
    result = run("spam", "train", "--ham", str(DATA / "ham.mbox.gz"), "--account", "alice", *c)
    assert result.returncode == 0, result.stderr
    status = json.loads(run("spam", "status", "--account", "alice", "--json", *c).stdout)
    assert status == {"global": {"spam": 0, "ham": 600}, "alice": {"spam": 0, "ham": 600}}


def test_iter_messages_reads_plain_and_compressed_mbox(tmp_path):
    mbox = b"From a@b Thu Jan  1 00:00:00 1970\nSubject: one\n\n>From here\n\nFrom a@b Thu Jan  1 00:00:00 1970\nSubject: two\n\nx\n"
    (tmp_path / "box").write_bytes(mbox)
    with gzip.open(tmp_path / "box.gz", "wb") as out:
        out.write(mbox)
    for name in ("box", "box.gz"):
        messages = [raw for _where, raw in iter_messages([str(tmp_path / name)])]
        assert [m.split(b"\r\n", 1)[0] for m in messages] == [b"Subject: one", b"Subject: two"]
        assert b"\r\n>From here" in messages[0] or b"\r\nFrom here" in messages[0]
