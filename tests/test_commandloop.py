"""The shared command loop (mailserve.commandloop) driven through a small line protocol.

The protocol below is the smallest user of ``CommandLoop``: one command per line, ``-ERR``-style
refusals. Its commands exercise the loop's paths: an answer at once, an answer that waits on a
Deferred the test controls, a bug raised at once or later, and closing after the reply.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from mailserve.commandloop import BadCommand, CloseAfterReply, CommandLoop
from mailserve.sasl import LineReader, LineTooLong

OPEN, CLOSED_DOOR = "OPEN", "CLOSED_DOOR"
COMMANDS = {
    OPEN: frozenset({"ECHO", "WAIT", "CRASH", "CRASHLATER", "QUIT", "QUITLATER", "LOCK"}),
    CLOSED_DOOR: frozenset({"ECHO", "QUIT"}),
}


class LineSession(CommandLoop, Protocol):
    """A line protocol on the loop: ``do_X`` per command, two states, plain-text refusals."""

    protocol_name = "TEST"
    commands = COMMANDS
    max_pending_input = 100
    max_bad_commands = 3

    def __init__(self) -> None:
        super().__init__()
        self.state = OPEN
        self.lines = LineReader(64)
        self.waiting: list[defer.Deferred] = []
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=self.events.append)

    def connectionMade(self) -> None:
        self._connected = True

    def connectionLost(self, reason: Any = None) -> None:
        self._connected = False

    def dataReceived(self, data: bytes) -> None:
        self.lines.feed(data)
        self._process()

    def send(self, text: str) -> None:
        self.transport.write(text.encode() + b"\r\n")

    # hooks
    def _next_command(self) -> bytes | None:
        try:
            line = self.lines.next_line()
        except LineTooLong:
            self.send("BYE line too long")
            raise CloseAfterReply() from None
        if line is not None and line.startswith(b"#"):
            raise BadCommand("comment is not a command")
        return line

    def _pending_input(self) -> int:
        return self.lines.pending_bytes

    def _dispatch(self, line: bytes) -> defer.Deferred | None:
        name, _, rest = line.decode().partition(" ")
        handler = self._handler(name)
        return None if handler is None else handler(rest)

    def _answer_bad_command(self, text: str) -> None:
        self.send(f"BAD {text}")

    def _answer_too_many_bad_commands(self) -> None:
        self.send("BYE too many bad commands")

    def _answer_internal_error(self) -> None:
        self.send("ERR internal")

    # commands
    def do_ECHO(self, rest: str) -> None:
        self.send(f"OK {rest}")

    def do_WAIT(self, rest: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        d.addCallback(lambda _: self.send(f"OK waited {rest}"))
        self.waiting.append(d)
        return d

    def do_CRASH(self, rest: str) -> None:
        raise RuntimeError("a bug")

    def do_CRASHLATER(self, rest: str) -> defer.Deferred:
        return defer.fail(RuntimeError("a later bug"))

    def do_QUIT(self, rest: str) -> None:
        self.send("OK bye")
        raise CloseAfterReply()

    def do_QUITLATER(self, rest: str) -> defer.Deferred:
        def bye(_: Any) -> None:
            self.send("OK bye later")
            raise CloseAfterReply()

        d: defer.Deferred = defer.Deferred()
        d.addCallback(bye)
        self.waiting.append(d)
        return d

    def do_LOCK(self, rest: str) -> None:
        self.state = CLOSED_DOOR
        self.send("OK locked")

    def helper(self) -> None:
        """Not a command: no ``do_`` prefix."""


class TLSShutdownTransport(StringTransport):
    """Like a TCP transport after ``startTLS``: ``loseConnection`` begins the TLS shutdown and
    leaves ``disconnecting`` unset (``twisted.internet._newtls.ConnectionMixin``)."""

    def loseConnection(self) -> None:
        self.shutdown_requested = True


@pytest.fixture
def session() -> LineSession:
    protocol = LineSession()
    protocol.makeConnection(StringTransport())
    return protocol


def replies(session: LineSession) -> list[str]:
    return session.transport.value().decode().splitlines()


def test_pipelined_commands_are_answered_in_order(session: LineSession) -> None:
    session.dataReceived(b"ECHO one\r\nECHO two\r\nECHO thr")
    assert replies(session) == ["OK one", "OK two"]
    session.dataReceived(b"ee\r\n")
    assert replies(session) == ["OK one", "OK two", "OK three"]


def test_a_waiting_command_holds_later_ones_until_it_is_answered(session: LineSession) -> None:
    session.dataReceived(b"WAIT a\r\nECHO after\r\n")
    assert replies(session) == []
    session.waiting.pop().callback(None)
    assert replies(session) == ["OK waited a", "OK after"]


def test_reading_pauses_while_too_much_input_waits_and_resumes_after(session: LineSession) -> None:
    transport = session.transport
    session.dataReceived(b"WAIT a\r\n" + b"ECHO x\r\n" * 10)  # 80 bytes pending: under the limit
    assert transport.producerState == "producing"
    session.dataReceived(b"ECHO y\r\n" * 5)  # 120 bytes pending: over the limit of 100
    assert transport.producerState == "paused"
    session.waiting.pop().callback(None)
    assert transport.producerState == "producing"
    assert replies(session) == ["OK waited a"] + ["OK x"] * 10 + ["OK y"] * 5


def test_a_second_waiting_command_pauses_again(session: LineSession) -> None:
    transport = session.transport
    session.dataReceived(b"WAIT a\r\nWAIT b\r\n" + b"ECHO z\r\n" * 13)
    assert transport.producerState == "paused"
    session.waiting.pop().callback(None)  # WAIT b starts; 104 bytes still pending
    assert transport.producerState == "paused"
    assert replies(session) == ["OK waited a"]
    session.waiting.pop().callback(None)
    assert transport.producerState == "producing"
    assert replies(session) == ["OK waited a", "OK waited b"] + ["OK z"] * 13


def test_a_command_that_raises_is_answered_and_the_session_goes_on(session: LineSession) -> None:
    session.dataReceived(b"CRASH\r\nECHO still here\r\n")
    assert replies(session) == ["ERR internal", "OK still here"]
    assert not session.transport.disconnecting
    failures = [e for e in session.events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(RuntimeError)
    assert failures[0]["protocol"] == "TEST"


def test_a_command_that_fails_later_is_answered_and_the_session_goes_on(session: LineSession) -> None:
    session.dataReceived(b"CRASHLATER\r\nECHO still here\r\n")
    assert replies(session) == ["ERR internal", "OK still here"]
    assert [e["log_failure"].value.args for e in session.events if "log_failure" in e] == [("a later bug",)]


def test_unknown_and_misplaced_commands_are_refused(session: LineSession) -> None:
    session.dataReceived(b"NOPE\r\nHELPER\r\nECH0 digits\r\n\r\nLOCK\r\nWAIT x\r\n")
    assert replies(session)[:3] == ["BAD Unknown command", "BAD Unknown command", "BAD Unknown command"]
    assert session.transport.disconnecting  # the third refusal reaches the limit


def test_a_command_is_refused_outside_the_states_that_accept_it() -> None:
    session = LineSession()
    session.makeConnection(StringTransport())
    session.dataReceived(b"LOCK\r\nWAIT x\r\nECHO still\r\n\r\n")
    assert replies(session) == [
        "OK locked", "BAD WAIT is not valid in the CLOSED_DOOR state", "OK still", "BAD Empty command",
    ]
    assert session.waiting == []


def test_the_bad_command_limit_closes_after_its_reply(session: LineSession) -> None:
    session.dataReceived(b"NOPE\r\n# comment\r\nECHO fine\r\nNOPE\r\nECHO never\r\n")
    assert replies(session) == [
        "BAD Unknown command", "BAD comment is not a command", "OK fine",
        "BAD Unknown command", "BYE too many bad commands",
    ]
    assert session.transport.disconnecting


def test_close_after_reply_reads_nothing_more_even_during_a_tls_shutdown() -> None:
    session = LineSession()
    transport = TLSShutdownTransport()
    session.makeConnection(transport)
    session.dataReceived(b"QUIT\r\nECHO never\r\n")
    assert replies(session) == ["OK bye"]
    assert transport.shutdown_requested
    session.dataReceived(b"ECHO still never\r\n")
    assert replies(session) == ["OK bye"]


def test_close_after_a_waiting_reply_reads_nothing_more() -> None:
    session = LineSession()
    transport = TLSShutdownTransport()
    session.makeConnection(transport)
    session.dataReceived(b"QUITLATER\r\nECHO never\r\n")
    session.waiting.pop().callback(None)
    assert replies(session) == ["OK bye later"]
    assert transport.shutdown_requested


def test_a_line_too_long_is_answered_and_closes(session: LineSession) -> None:
    session.dataReceived(b"ECHO " + b"x" * 100 + b"\r\nECHO never\r\n")
    assert replies(session) == ["BYE line too long"]
    assert session.transport.disconnecting


def test_nothing_is_answered_once_the_connection_is_gone(session: LineSession) -> None:
    session.dataReceived(b"CRASHLATER\r\n")  # answered at once: a failed Deferred fires now
    session.dataReceived(b"WAIT a\r\nECHO never\r\n")
    session.connectionLost(None)
    session.waiting.pop().errback(ConnectionError("gone"))
    assert replies(session) == ["ERR internal"]
    assert len([e for e in session.events if "log_failure" in e]) == 1
