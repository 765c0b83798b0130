"""Differential tests: every script/message pair under tests/data/sieve runs
through our interpreter and through Pigeonhole's sieve-test; the actions
(stores with flags, redirects, reject, discard, vacation, failure) must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailserve.sieve import SieveEnvironment, SieveMessage, compile_script, run
from tests.sieve.pigeonhole import (
    ENVELOPE_FROM,
    ENVELOPE_TO,
    outcome_of,
    run_pigeonhole,
    sieve_test_binary,
)
from tests.sieve.test_rfc_examples import (
    COPY_EXAMPLE,
    ENCODED_CHARACTER_EXAMPLES,
    MULTIPART,
    MULTIPART_BODY,
    OFFICE_HOURS,
    REJECT_EXAMPLE,
    RFC5173_SECTION_7,
    RFC5228_S9_MESSAGES,
    RFC5228_SECTION_9,
    RFC5231_MESSAGE,
    RFC5233_SECTION_4,
    SPAMTESTPLUS,
    VACATION_EXAMPLE,
    VIRUSTEST,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "sieve"
CASES = sorted(path.stem for path in CORPUS.glob("*.sieve"))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    for name in CASES:
        assert (CORPUS / f"{name}.eml").exists(), name


def test_sieve_test_is_installed() -> None:
    # Fails (never skips) when Pigeonhole is missing: see tests/sieve/README.
    assert Path(sieve_test_binary()).exists()


def _message_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("name", CASES)
def test_same_actions_as_pigeonhole(name: str) -> None:
    script_text = (CORPUS / f"{name}.sieve").read_text(encoding="utf-8")
    raw = (CORPUS / f"{name}.eml").read_bytes()
    ours = outcome_of(
        run(
            compile_script(script_text),
            SieveMessage(raw, ENVELOPE_FROM, ENVELOPE_TO),
            SieveEnvironment(mailbox_exists=lambda mailbox: True),
        )
    )
    theirs, report = run_pigeonhole(script_text, raw)
    assert ours == theirs, f"{name}: ours={ours}\npigeonhole={theirs}\n{report}\n{_message_text(raw)}"


# -- the RFC examples, run through both ---------------------------------------------------------
# The scripts of tests/sieve/test_rfc_examples.py, each with messages that take its different
# paths. (ereject is left out: Pigeonhole does not implement it; mailboxexists is left out
# because the two sides' mailbox lists differ by construction.)

def _message(*headers: str, body: str = "Hello.\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def _fileinto_each(requires: str, strings: list[str]) -> str:
    return f"require [{requires}];\n" + "".join(f'fileinto "{value}";\n' for value in strings)


def _fileinto_if(requires: str, tests: list[str]) -> str:
    return f"require [{requires}];\n" + "".join(
        f'if {test} {{ fileinto "t{number}"; }}\n' for number, test in enumerate(tests, 1))


RELATIONAL_TESTS = [
    'address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]',
    ('anyof ( address :count "ge" :comparator "i;ascii-numeric" ["to"] ["3"], '
     'address :count "ge" :comparator "i;ascii-numeric" ["cc"] ["3"] )'),
    'header :count "ge" :comparator "i;ascii-numeric" ["received"] ["3"]',
    'header :count "ge" :comparator "i;ascii-numeric" ["received", "subject"] ["3"]',
    'header :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]',
    'header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"]',
    'header :value "gt" ["subject"] ["M"]',
]

VARIABLE_MODIFIERS = """require ["variables", "fileinto"];
set "a" "juMBlEd lETteRS";
set :length "b1" "${a}"; fileinto "${b1}";
set :lower "b2" "${a}"; fileinto "${b2}";
set :upperfirst "b3" "${a}"; fileinto "${b3}";
set :upperfirst :lower "b4" "${a}"; fileinto "${b4}";
set :lowerfirst :upper "b5" "${a}"; fileinto "${b5}";
set :quotewildcard "b6" "Rock*?"; fileinto "${b6}";
fileinto "[${unknown}] ${a-b} ${} ${1x}";
if header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; }
"""

IMAP4FLAGS = """require ["imap4flags", "fileinto", "variables"];
if size :over 500K { setflag "\\\\Deleted"; }
if header :contains "from" "boss@frobnitzm.example.edu" {
    setflag "flagvar" "\\\\Flagged";
    fileinto :flags "${flagvar}" "INBOX.From Boss";
}
addflag ["\\\\Seen", "\\\\seen", "$MDNSent"];
if hasflag :contains "MDN" { fileinto "A"; }
if not hasflag "\\\\Answered" { fileinto "C"; }
"""

# Only :index 1 for the date test: Pigeonhole evaluates "date :index 2" and "date :index 1 :last"
# against the first field (see README); RFC 5260 §6 and our interpreter use the indexed one.
INDEX = """require ["date", "index", "fileinto"];
if date :index 1 :zone "+0000" "received" "date" "2007-07-02" { fileinto "newest"; }
if header :index 2 "x-tag" "second" { fileinto "second"; }
if header :index 1 :last "x-tag" "third" { fileinto "last"; }
if header :index 4 "x-tag" "*" { fileinto "never"; }
"""

EDITHEADER = """require ["editheader", "index", "fileinto"];
addheader "X-Source" "mailserve";
deleteheader :index 1 :is "X-Tag" "first";
deleteheader :matches "X-Spam-Flag" "Y*";
if header :is "X-Tag" "second" { fileinto "edited"; }
if not exists "X-Spam-Flag" { fileinto "clean"; }
if header :is "X-Source" "mailserve" { fileinto "added"; }
"""

_INDEXED = _message(
    "Received: from b.example by me.example; Mon, 2 Jul 2007 12:00:00 +0000",
    "Received: from a.example by b.example; Sun, 1 Jul 2007 23:00:00 +0000",
    "X-Tag: first", "X-Tag: second", "X-Tag: third",
)
_MULTIPART = _message(*MULTIPART, body=MULTIPART_BODY)
_ON_TIME = "Date: Mon, 2 Jul 2007 {} -0700"

RFC_CASES: dict[str, tuple[str, bytes, str]] = {
    **{f"rfc5228-s9-{n}": (RFC5228_SECTION_9, _message(*headers), ENVELOPE_TO)
       for n, (headers, _) in enumerate(RFC5228_S9_MESSAGES)},
    **{f"rfc5233-s4-{recipient}": (RFC5233_SECTION_4, _message("Subject: x"), recipient)
       for recipient in ("postmaster+x@example.com", "ken+mta-filters@example.com", "ken+foo@example.com",
                         "ken+@example.com", "ken@example.com")},
    "rfc5228-encoded-character": (
        _fileinto_each('"encoded-character", "fileinto"', [e for e, _ in ENCODED_CHARACTER_EXAMPLES]),
        _message("Subject: x"), ENVELOPE_TO),
    "rfc5229-modifiers": (VARIABLE_MODIFIERS, _message('List-ID: "Dovecot" <dovecot@dovecot.example>'),
                          ENVELOPE_TO),
    "rfc5231-s7": (_fileinto_if('"relational", "comparator-i;ascii-numeric", "fileinto"', RELATIONAL_TESTS),
                   RFC5231_MESSAGE.replace(b"\r\n\r\n", b"\r\nX-Priority: 1\r\n\r\n", 1), ENVELOPE_TO),
    "rfc5173-s7-multipart": (RFC5173_SECTION_7, _MULTIPART, ENVELOPE_TO),
    "rfc5173-s7-plain": (RFC5173_SECTION_7, _message("Subject: p", body="missile\r\n"), ENVELOPE_TO),
    "rfc5232-big": (IMAP4FLAGS, _message("Subject: big", body="x" * 600_000), ENVELOPE_TO),
    "rfc5232-boss": (IMAP4FLAGS, _message("From: boss@frobnitzm.example.edu"), ENVELOPE_TO),
    "rfc5260-office-hours": (OFFICE_HOURS, _message("From: boss@example.com", _ON_TIME.format("16:59:59")),
                             ENVELOPE_TO),
    "rfc5260-after-hours": (OFFICE_HOURS, _message("From: boss@example.com", _ON_TIME.format("17:00:00")),
                            ENVELOPE_TO),
    "rfc5260-index": (INDEX, _INDEXED, ENVELOPE_TO),
    "rfc5293-editheader": (EDITHEADER, _message("X-Tag: first", "X-Tag: second", "X-Spam-Flag: YES"),
                           ENVELOPE_TO),
    "rfc5429-reject": (REJECT_EXAMPLE, _message("From: coyote@desert.example.org"), ENVELOPE_TO),
    "rfc5235-spamtest-untested": (SPAMTESTPLUS, _message("Subject: x"), ENVELOPE_TO),
    "rfc5235-virustest-untested": (VIRUSTEST, _message("Subject: x"), ENVELOPE_TO),
    "rfc3894-copy": (COPY_EXAMPLE, _message("Subject: [acme-users] news"), ENVELOPE_TO),
    "rfc5230-vacation": (VACATION_EXAMPLE, _message("From: friend@example.net", f"To: {ENVELOPE_TO}",
                                                    "Subject: lunch?"), ENVELOPE_TO),
}


@pytest.mark.parametrize("name", sorted(RFC_CASES))
def test_rfc_examples_act_as_in_pigeonhole(name: str) -> None:
    script_text, raw, envelope_to = RFC_CASES[name]
    ours = outcome_of(
        run(
            compile_script(script_text),
            SieveMessage(raw, ENVELOPE_FROM, envelope_to),
            SieveEnvironment(mailbox_exists=lambda mailbox: True),
        )
    )
    theirs, report = run_pigeonhole(script_text, raw, ENVELOPE_FROM, envelope_to)
    assert ours == theirs, f"{name}: ours={ours}\npigeonhole={theirs}\n{report}\n{_message_text(raw)}"
