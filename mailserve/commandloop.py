"""The command loop shared by the one-command-at-a-time protocols (POP3, ManageSieve).

Both protocols read a command, run it, answer it, and only then read the next one: RFC 2449 §6.6
(POP3 PIPELINING) and RFC 5804 §1.2 (ManageSieve) let a client send several commands without
waiting, but the answers must come back in order. A handler may have to wait (a login, a thread
compiling a script, the POP3 UPDATE commit); while it does, later input stays buffered, and once
more than ``max_pending_input`` bytes of it are waiting the socket stops being read, so a client
that pipelines without end cannot make the process hold its whole stream.

One command that fails with a bug is answered with a temporary error and the session goes on
(what Dovecot does: one broken command never takes the server or the session down). Commands the
server cannot accept are counted; after ``max_bad_commands`` of them the connection is closed, as
Dovecot's ``mail_max_bad_commands`` does, so a client sending garbage cannot keep a session busy.

Dispatch is by naming convention, as in ``twisted.mail``: command ``X`` is handled by ``do_X``,
and a per-state table (``commands``) says which commands the current state accepts.

What differs between the protocols is small and lives in hooks the protocol implements: how the
next command is read from the buffered input, and how each kind of refusal is worded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure


class CloseAfterReply(Exception):
    """Raised in a handler (or a read hook) to end the session once its reply is sent."""


class BadCommand(Exception):
    """Raised by a read hook for input that is not a command; ``str()`` is the refusal text.

    It counts towards the bad-command limit like an unknown command does.
    """


class CommandLoop:
    """Mixin for a ``Protocol``: reads commands in order, one running at a time.

    The protocol sets ``_connected`` in ``connectionMade``/``connectionLost``, feeds input to its
    reader and calls ``_process()`` from ``dataReceived``, and implements the hooks below.
    """

    log = Logger()
    #: Name used in log messages ("POP3 command failed").
    protocol_name = "command"
    #: Which commands each state accepts: ``commands[state]`` holds the upper-case names.
    commands: ClassVar[Mapping[str, frozenset[str]]] = {}
    #: Unprocessed input held while a command runs before the socket stops being read.
    max_pending_input = 64 * 1024
    #: Unknown or misplaced commands tolerated before the connection is closed.
    max_bad_commands = 20

    transport: Any
    state: str

    def __init__(self) -> None:
        self._connected = False
        self._busy = False
        self._processing = False
        self._reading_paused = False
        self._closing = False
        self._bad_commands = 0

    # -- hooks the protocol implements ----------------------------------------------------------
    def _next_command(self) -> Any | None:
        """The next complete command from buffered input, or ``None`` until more arrives.

        May raise ``BadCommand`` for malformed input the session survives, or ``CloseAfterReply``
        (after sending its reply) for input it does not.
        """
        raise NotImplementedError

    def _pending_input(self) -> int:
        """Bytes received and not yet consumed as commands."""
        raise NotImplementedError

    def _dispatch(self, command: Any) -> defer.Deferred | None:
        """Run one command; a ``Deferred`` result holds later commands until it fires."""
        raise NotImplementedError

    def _answer_bad_command(self, text: str) -> None:
        """Refuse a command the server cannot accept (``-ERR text``, ``NO "text"``)."""
        raise NotImplementedError

    def _answer_too_many_bad_commands(self) -> None:
        """The last words before the bad-command limit closes the connection."""
        raise NotImplementedError

    def _answer_internal_error(self) -> None:
        """Answer a command that failed with a bug: a temporary error the client may retry."""
        raise NotImplementedError

    def _wrong_state_text(self, command: str) -> str:
        """Why ``command`` is refused in the current state."""
        return f"{command} is not valid in the {self.state} state"

    def _answer_failure(self, failure: Failure) -> None:
        """Answer a command that raised. Protocols override this to map the errors they expect
        to their own replies and call ``super()`` for the rest, which are bugs."""
        self.log.failure("{protocol} command failed", failure, protocol=self.protocol_name)
        self._answer_internal_error()

    # -- the loop -----------------------------------------------------------------------------
    def _process(self) -> None:
        """Run complete commands in order, stopping while one waits for its answer."""
        if self._processing:
            return
        self._processing = True
        try:
            while self._may_read():
                try:
                    command = self._next_command()
                except BadCommand as e:
                    self._bad_command(str(e))
                    continue
                if command is None:
                    break
                self._run(command)
            if self._busy and self._pending_input() > self.max_pending_input and not self._reading_paused:
                self._reading_paused = True
                self.transport.pauseProducing()
        except CloseAfterReply:
            self._close_after_reply()
        finally:
            self._processing = False

    def _may_read(self) -> bool:
        return (
            not self._busy
            and self._connected
            and not self._closing
            and not self.transport.disconnecting
        )

    def _run(self, command: Any) -> None:
        try:
            result = self._dispatch(command)
        except CloseAfterReply:
            raise
        except Exception:  # noqa: BLE001 - a bug answers one command, never kills the server
            self._answer_failure(Failure())
            return
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addErrback(self._command_failed)
            result.addBoth(self._command_done)

    def _command_failed(self, failure: Failure) -> None:
        if failure.check(CloseAfterReply):
            self._close_after_reply()
            return
        if not self._connected:
            return
        self._answer_failure(failure)

    def _command_done(self, _: Any) -> None:
        self._busy = False
        if self._reading_paused and self._connected:
            self._reading_paused = False
            self.transport.resumeProducing()
        if self._connected:
            self._process()

    def _close_after_reply(self) -> None:
        """End the session once the replies written so far are sent; read nothing more.

        ``_closing`` is what stops the loop: after ``startTLS`` a TCP transport's
        ``loseConnection`` starts the TLS shutdown without setting ``disconnecting``.
        """
        self._closing = True
        self.transport.loseConnection()

    # -- dispatch -------------------------------------------------------------------------------
    def _handler(self, name: str) -> Callable[..., Any] | None:
        """The ``do_NAME`` method for a command the current state accepts.

        Anything else is refused as a bad command, and ``None`` returned.
        """
        command = name.upper()
        if not command:
            return self._bad_command("Empty command")
        handler = getattr(self, f"do_{command}", None) if command.isalpha() else None
        if handler is None:
            return self._bad_command("Unknown command")
        if command not in self.commands[self.state]:
            return self._bad_command(self._wrong_state_text(command))
        return handler

    def _bad_command(self, text: str) -> None:
        """Refuse a command; the ``max_bad_commands``-th refusal also ends the session."""
        self._bad_commands += 1
        self._answer_bad_command(text)
        if self._bad_commands >= self.max_bad_commands:
            self._answer_too_many_bad_commands()
            raise CloseAfterReply()
