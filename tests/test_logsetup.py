"""Log output: text by default, JSON lines when configured, filtered by level."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher

from mailserve.config import parse_config
from mailserve.logsetup import make_observer


def emit(config_text: str) -> str:
    config = parse_config(config_text)
    stream = io.StringIO()
    publisher = LogPublisher(make_observer(config.logging, stream))
    log = Logger(namespace="mailserve.test", observer=publisher)
    log.debug("hidden at info {x}", x=1)
    log.info("session {session} said {what}", session="a1b2", what="hello")
    log.error("broken {thing}", thing="disk")
    return stream.getvalue()


def test_text_by_default_with_level_filter():
    out = emit("")
    assert "session a1b2 said hello" in out and "broken disk" in out
    assert "hidden at info" not in out


def test_json_lines_when_configured():
    out = emit('[logging]\nformat = "json"\nlevel = "error"\n')
    lines = out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["log_format"] for e in events] == ["broken {thing}"]
    assert events[0]["thing"] == "disk" and events[0]["log_namespace"] == "mailserve.test"
