"""A real server in a child process, and a small JSON client for its HTTP listener."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RunningServer:
    process: subprocess.Popen
    ports: dict[str, int]
    admin_password: str
    data_dir: str
    log: list[str] = field(default_factory=list)

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body: Any = None, auth: tuple[str, str] | None = None,
                token: str | None = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
                content_type: str = "application/json") -> Reply:
        return http_request(self.http_port, method, path, body, auth=auth, token=token, headers=headers,
                            raw=raw, content_type=content_type)

    def admin(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request(method, path, body, auth=("admin", self.admin_password), **kwargs)


def http_request(port: int, method: str, path: str, body: Any = None, auth: tuple[str, str] | None = None,
                 token: str | None = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
                 content_type: str = "application/json") -> Reply:
    """One request to 127.0.0.1:``port`` (blocking: from a test thread, never the reactor's)."""
    sent = dict(headers or {})
    if auth is not None:
        sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    if token is not None:
        sent["Authorization"] = "Bearer " + token
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        sent.setdefault("Content-Type", content_type)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def start_server_process(data_dir: str, listeners: tuple[str, ...],
                         sections: dict[str, dict[str, Any]] | None = None) -> RunningServer:
    """A server in a child process with these listeners (and configuration tables), once it listens."""
    log_path = os.path.join(data_dir, "server.log")
    extra = [f"--sections={json.dumps(sections)}"] if sections else []
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.web.serverproc", data_dir, *listeners, *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
        )
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        with open(log_path) as log:
            raise RuntimeError("test server did not start:\n" + log.read())
    info = json.loads(line)
    return RunningServer(process, info["ports"], info["admin_password"], data_dir)


def stop_server_process(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(10)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    server = start_server_process(str(tmp_path_factory.mktemp("web")), ("http",))
    yield server
    stop_server_process(server)
