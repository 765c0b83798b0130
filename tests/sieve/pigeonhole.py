"""Runs Pigeonhole's ``sieve-test`` (Debian package ``dovecot-sieve``) and
reduces its report and ours to one comparable outcome."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mailserve.sieve import (
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)

ENVELOPE_FROM = "sender@example.com"
ENVELOPE_TO = "me@example.org"
#: Pigeonhole enables these only on request; we support them all by default.
EXTRA_EXTENSIONS = "+vacation-seconds +editheader +spamtest +spamtestplus +virustest"


@dataclass
class Outcome:
    """What both implementations must agree on."""

    stores: dict[str, frozenset[str]] = field(default_factory=dict)
    redirects: set[str] = field(default_factory=set)
    rejected: str | None = None
    discarded: bool = False
    vacation: bool = False
    failed: bool = False


def outcome_of(result: SieveResult) -> Outcome:
    """Our result, reduced to an ``Outcome``."""
    outcome = Outcome(failed=result.error is not None)
    for action in result.actions:
        if isinstance(action, Keep):
            outcome.stores["INBOX"] = frozenset(flag.lower() for flag in action.flags)
        elif isinstance(action, FileInto):
            outcome.stores[action.mailbox] = frozenset(flag.lower() for flag in action.flags)
        elif isinstance(action, Redirect):
            outcome.redirects.add(action.address)
        elif isinstance(action, Reject):
            outcome.rejected = _printable(action.reason)
        elif isinstance(action, Discard):
            outcome.discarded = True
        elif isinstance(action, Vacation):
            outcome.vacation = True
    return outcome


def _printable(text: str) -> str:
    """sieve-test prints control characters as '?'; do the same to ours."""
    return "".join("?" if ord(char) < 0x20 else char for char in text)


def sieve_test_binary() -> str:
    """Path of ``sieve-test``; a missing binary is a failure, not a skip."""
    path = shutil.which("sieve-test")
    if path is None:
        raise RuntimeError("sieve-test not found: install the Debian packages dovecot-core and dovecot-sieve")
    return path


def run_pigeonhole(
    script_text: str, message: bytes, envelope_from: str = ENVELOPE_FROM, envelope_to: str = ENVELOPE_TO
) -> tuple[Outcome, str]:
    """Run ``sieve-test`` on ``script_text`` and ``message``; returns the
    parsed outcome and the raw report (for assertion messages).

    Without ``-e`` sieve-test lists the actions the script asked for; whether
    a vacation reply is really sent (list mail, recipient checks) is only
    decided at execution, so a second run with ``-e`` settles that."""
    report = _sieve_test(script_text, message, False, envelope_from, envelope_to)
    if "failed to compile" in report:
        raise AssertionError(f"sieve-test could not compile the script:\n{report}")
    outcome = parse_report(report)
    if outcome.vacation:
        executed = _sieve_test(script_text, message, True, envelope_from, envelope_to)
        outcome.vacation = "sent vacation response" in executed
        report += executed
    return outcome, report


def _sieve_test(
    script_text: str, message: bytes, execute: bool, envelope_from: str = ENVELOPE_FROM,
    envelope_to: str = ENVELOPE_TO,
) -> str:
    binary = sieve_test_binary()
    with tempfile.TemporaryDirectory(prefix="sieve-diff-") as directory:
        base = Path(directory)
        os.chmod(base, 0o777)  # sieve-test drops privileges when run as root
        (base / "mail").mkdir(mode=0o777)
        (base / "home").mkdir(mode=0o777)
        os.chmod(base / "mail", 0o777)
        os.chmod(base / "home", 0o777)
        uid = os.getuid() or 65534
        gid = os.getgid() or 65534
        (base / "dovecot.conf").write_text(
            f"mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
            f"mail_home = {base}/home\nmail_location = maildir:{base}/mail\n"
            f"plugin {{\n  sieve_extensions = {EXTRA_EXTENSIONS}\n}}\n"
        )
        (base / "script.sieve").write_text(script_text, encoding="utf-8")
        (base / "message.eml").write_bytes(message)
        for name in ("script.sieve", "message.eml", "dovecot.conf"):
            os.chmod(base / name, 0o666)
        completed = subprocess.run(
            [binary, "-c", str(base / "dovecot.conf"), "-f", envelope_from, "-a", envelope_to,
             "-r", envelope_to, *(["-e"] if execute else []),
             str(base / "script.sieve"), str(base / "message.eml")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": str(base / "home")},
            check=False,
        )
    return completed.stdout + completed.stderr


_ITEM = re.compile(r"^ \* (.*)$")


def parse_report(report: str) -> Outcome:
    """Parse the "Performed actions" / "Implicit keep" report of sieve-test."""
    outcome = Outcome()
    if "final result: failed" in report:
        outcome.failed = True
        outcome.stores["INBOX"] = frozenset()
        return outcome
    current: str | None = None
    for line in report.splitlines():
        item = _ITEM.match(line)
        if item:
            text = item.group(1)
            current = None
            if text.startswith("store message in folder: "):
                current = text[len("store message in folder: ") :]
                outcome.stores[current] = frozenset()
            elif text.startswith("redirect message to: "):
                outcome.redirects.add(text[len("redirect message to: ") :].strip("<>"))
            elif text.startswith("reject message with reason: "):
                outcome.rejected = text[len("reject message with reason: ") :]
            elif text == "discard":
                outcome.discarded = True
            elif text.startswith("send vacation message"):
                outcome.vacation = True
            continue
        stripped = line.strip()
        if current is not None and stripped.startswith("+ add IMAP flags: "):
            flags = stripped[len("+ add IMAP flags: ") :].split()
            outcome.stores[current] = frozenset(flag.lower() for flag in flags)
    return outcome
