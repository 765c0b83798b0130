"""``twistd -n mailserve`` as an admin runs it: starts, serves, stops on SIGTERM with exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path, port: int) -> str:
    path = tmp_path / "mailserve.toml"
    path.write_text(
        f"""
[server]
hostname = "mail.example.test"
data_dir = "{tmp_path / 'data'}"

[server.listener.smtp]
bind = "127.0.0.1:{port}"
protocol = "smtp"

[auth]
argon2_time_cost = 1
argon2_memory_cost = "64KiB"
argon2_parallelism = 1
"""
    )
    return str(path)


def start(config: str, cwd) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "mailserve", f"--config={config}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )
    lines = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        lines.append(line)
        if "mailserve is running" in line or time.monotonic() > deadline:
            break
    # Read the rest of the banner (listeners, admin line) that follows at once.
    time.sleep(0.5)
    return proc, lines


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def test_twistd_runs_stops_on_sigterm_and_keeps_data(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    proc, lines = start(config, tmp_path)
    try:
        assert any("mailserve is running" in line for line in lines), "".join(lines)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.recv(100).startswith(b"220 mail.example.test")
    finally:
        code, rest = stop(proc)
    output = "".join(lines) + rest
    assert code == 0, output
    assert "administrator login: admin / " in output, output
    assert "mailserve stopped" in output, output
    # Restart on the same data: the administrator exists, no new password is made.
    proc, lines = start(config, tmp_path)
    code, rest = stop(proc)
    output = "".join(lines) + rest
    assert code == 0, output
    assert "administrator login" not in output


def test_twistd_reports_a_port_in_use_and_exits_nonzero(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port)
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "mailserve", f"--config={config}"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        )
    assert result.returncode != 0
    assert f"listener smtp (smtp): cannot listen on 127.0.0.1:{port}: Address already in use" in (
        result.stderr + result.stdout)


@pytest.mark.parametrize("bad", ['[server]\nhostnme = "x"\n'])
def test_twistd_refuses_a_bad_config_with_its_errors(tmp_path, bad):
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    result = subprocess.run([TWISTD, "-n", "mailserve", f"--config={path}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert f"{path}:server.hostnme: unknown key 'hostnme'; did you mean 'hostname'?" in (
        result.stderr + result.stdout)
