"""Interpreter: RFC examples per extension, implicit keep rules, limits."""

from __future__ import annotations

import datetime

import pytest

from mailserve.sieve import (
    AddHeader,
    Discard,
    Ereject,
    FileInto,
    Keep,
    MemoryResponseTracker,
    Redirect,
    Reject,
    SieveEnvironment,
    SieveLimits,
    SieveMessage,
    SieveResult,
    Vacation,
    compile_script,
    run,
)

NOW = datetime.datetime(2025, 4, 1, 12, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))

MESSAGE = (
    b"Received: from a.example by b.example; Tue, 1 Apr 2025 10:00:00 +0000\r\n"
    b"Received: from c.example by a.example; Tue, 1 Apr 2025 09:58:00 +0000\r\n"
    b"Date: Tue, 01 Apr 2025 09:59:00 +0200\r\n"
    b"From: Coyote <coyote@desert.example.org>\r\n"
    b"To: roadrunner+birds@acme.example.com, me@example.org\r\n"
    b"Subject: =?utf-8?q?=C2=A1Bip_bip!?= I have a truly amazing offer\r\n"
    b"Message-ID: <1@desert.example.org>\r\n"
    b"X-Spam-Level: ***\r\n"
    b"\r\n"
    b"I've got some great birdseed over here at my place.\r\nWant to buy it?\r\n"
)


def execute(
    script: str, raw: bytes = MESSAGE, env: SieveEnvironment | None = None, limits: SieveLimits | None = None,
    envelope_from: str = "coyote@desert.example.org", envelope_to: str = "me@example.org",
) -> SieveResult:
    environment = env or SieveEnvironment(now=lambda: NOW, mailbox_exists=lambda name: name in ("INBOX", "Junk"))
    return run(compile_script(script), SieveMessage(raw, envelope_from, envelope_to), environment, limits)


def test_implicit_keep_when_nothing_happens() -> None:
    result = execute("if false { discard; }")
    assert result.actions == [Keep((), implicit=True)]
    assert result.implicit_keep and result.error is None


def test_rfc5228_example_section_9() -> None:
    # RFC 5228 §9 (abridged): the coyote's offer is filed and flagged for discard.
    script = """
    require ["fileinto"];
    if header :contains "from" "coyote" {
        discard;
    } elsif header :contains ["subject"] ["$$$"] {
        discard;
    } else {
        fileinto "INBOX";
    }
    """
    assert execute(script).actions == [Discard()]


def test_header_sees_rfc2047_decoded_values() -> None:
    assert execute('require "fileinto"; if header :contains "subject" "¡Bip" { fileinto "Decoded"; }').actions == [
        FileInto("Decoded")
    ]


def test_fileinto_cancels_implicit_keep_unless_copy() -> None:
    assert execute('require "fileinto"; fileinto "A";').actions == [FileInto("A")]
    result = execute('require ["fileinto", "copy"]; fileinto :copy "A"; redirect :copy "x@y.example";')
    assert result.actions == [FileInto("A", copy=True), Redirect("x@y.example", copy=True), Keep(implicit=True)]


def test_stop_keeps_implicit_keep() -> None:
    assert execute('require "fileinto"; stop; fileinto "A";').actions == [Keep(implicit=True)]


def test_reject_cancels_keep_and_conflicts_with_fileinto() -> None:
    assert execute('require "reject"; reject "no";').actions == [Reject("no")]
    result = execute('require ["reject", "fileinto"]; fileinto "A"; reject "no";')
    assert result.error is not None and "reject" in result.error
    assert result.actions == [Keep(implicit=True)]
    assert execute('require "ereject"; ereject "busy";').actions == [Ereject("busy")]


def test_envelope_and_address_parts_and_subaddress() -> None:
    script = """
    require ["envelope", "subaddress", "fileinto"];
    if envelope :domain "from" "desert.example.org" { fileinto "Env"; }
    if address :user "to" "roadrunner" { fileinto "User"; }
    if address :detail "to" "birds" { fileinto "Detail"; }
    if address :localpart "from" "coyote" { fileinto "Local"; }
    """
    assert [a.mailbox for a in execute(script).actions] == ["Env", "User", "Detail", "Local"]
    null_sender = execute('require "envelope"; if envelope :is "from" "" { discard; }', envelope_from="")
    assert null_sender.actions == [Discard()]


def test_imap4flags_rfc5232_examples() -> None:
    script = r"""
    require ["imap4flags", "fileinto", "variables"];
    setflag "\\Deleted";
    addflag ["\\Seen", "\\Answered"];
    removeflag "\\Deleted";
    if hasflag :is "\\seen" { fileinto "Seen"; }
    addflag "myvar" "$Label1 $Label2";
    if hasflag "myvar" "$label2" { fileinto :flags "${myvar}" "Labelled"; }
    """
    result = execute(script)
    assert result.actions == [
        FileInto("Seen", ("\\Seen", "\\Answered")),
        FileInto("Labelled", ("$Label1", "$Label2")),
    ]
    # The implicit keep carries the internal variable (RFC 5232 §3).
    kept = execute('require "imap4flags"; addflag "\\\\Flagged";')
    assert kept.actions == [Keep(("\\Flagged",), implicit=True)]


def test_variables_rfc5229_examples() -> None:
    script = """
    require ["variables", "fileinto"];
    set "honorific"  "Mr";
    set "first_name" "Wile";
    set "last_name"  "Coyote";
    set "vacation" "Dear ${HONORIFIC} ${last_name}, I'm out";
    set :upper "up" "${first_name}";
    set :lowerfirst "lf" "ABC";
    set :quotewildcard "q" "a*b?c\\\\";
    set :length "len" "${last_name}";
    if string :is "${vacation}" "Dear Mr Coyote, I'm out" { fileinto "${up}-${lf}-${q}-${len}"; }
    """
    assert execute(script).actions == [FileInto("WILE-aBC-a\\*b\\?c\\\\-6")]


def test_match_variables_leftmost_shortest() -> None:
    # RFC 5229 §3.2 example: "[acme-users] [fwd] version 1.0 is out"
    raw = b"Subject: [acme-users] [fwd] version 1.0 is out\r\n\r\nbody\r\n"
    script = """
    require ["variables", "fileinto"];
    if header :matches "Subject" "[*] *" { fileinto "${1}|${2}"; }
    """
    assert execute(script, raw).actions == [FileInto("acme-users|[fwd] version 1.0 is out")]


def test_relational_rfc5231() -> None:
    script = """
    require ["relational", "comparator-i;ascii-numeric", "fileinto"];
    if header :value "lt" :comparator "i;ascii-numeric" "x-priority" "3" { fileinto "High"; }
    if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "2" { fileinto "Many"; }
    if header :count "eq" :comparator "i;ascii-numeric" "received" "2" { fileinto "TwoHops"; }
    """
    raw = MESSAGE.replace(b"\r\n\r\n", b"\r\nX-Priority: 1\r\n\r\n", 1)
    assert [a.mailbox for a in execute(script, raw).actions] == ["High", "Many", "TwoHops"]


def test_body_rfc5173() -> None:
    script = """
    require ["body", "fileinto"];
    if body :text :contains "birdseed" { fileinto "Seed"; }
    if body :raw :contains "Want to buy" { fileinto "Raw"; }
    if body :content "image" :contains "x" { fileinto "Never"; }
    """
    assert [a.mailbox for a in execute(script).actions] == ["Seed", "Raw"]


def test_date_and_index_rfc5260() -> None:
    script = """
    require ["date", "index", "relational", "fileinto"];
    if date :zone "+0000" "date" "hour" "07" { fileinto "UTC7"; }
    if date :originalzone "date" "zone" "+0200" { fileinto "Orig"; }
    if date "date" "date" "2025-04-01" { fileinto "LocalDate"; }
    if currentdate :zone "+0000" "iso8601" "2025-04-01T10:00:00+00:00" { fileinto "Now"; }
    if currentdate "weekday" "2" { fileinto "Tuesday"; }
    if header :index 1 :last :contains "received" "c.example" { fileinto "FirstHop"; }
    if date :index 1 :zone "+0000" "received" "time" "10:00:00" { fileinto "Received"; }
    if date :zone "-0500" "received" "julian" "60766" { fileinto "Julian"; }
    """
    mailboxes = [a.mailbox for a in execute(script).actions]
    assert mailboxes == ["UTC7", "Orig", "LocalDate", "Now", "Tuesday", "FirstHop", "Received", "Julian"]


def test_editheader_rfc5293() -> None:
    script = """
    require ["editheader", "fileinto"];
    addheader "X-Hello" "World";
    addheader :last "X-Tail" "Grüße";
    deleteheader :contains "x-spam-level" "*";
    deleteheader "received";
    if header :is "x-hello" "World" { fileinto "SeesEdit"; }
    if not exists "x-spam-level" { fileinto "Deleted"; }
    """
    result = execute(script)
    assert result.of_type(FileInto) == [FileInto("SeesEdit"), FileInto("Deleted")]
    assert result.headers is not None
    assert result.headers[0] == ("X-Hello", "World")
    assert result.headers[-1] == ("X-Tail", "=?utf-8?b?R3LDvMOfZQ==?=")
    assert [name for name, _ in result.headers].count("Received") == 2  # protected
    assert AddHeader("X-Hello", "World") in result.actions


def test_mailbox_rfc5490() -> None:
    script = """
    require ["mailbox", "fileinto"];
    if mailboxexists "Junk" { fileinto :create "Junk/Sub"; }
    if mailboxexists ["Junk", "Missing"] { discard; }
    """
    assert execute(script).actions == [FileInto("Junk/Sub", create=True)]


def test_duplicate_rfc7352_records_only_after_success() -> None:
    clock = [1000.0]
    tracker = MemoryResponseTracker(lambda: clock[0])
    env = SieveEnvironment(now=lambda: NOW, duplicate_tracker=tracker)
    script = 'require ["duplicate", "fileinto"]; if duplicate { fileinto "Dups"; }'
    assert execute(script, env=env).actions == [Keep(implicit=True)]
    assert execute(script, env=env).actions == [FileInto("Dups")]
    clock[0] += 13 * 3600  # default period is 12 hours
    assert execute(script, env=env).actions == [Keep(implicit=True)]
    failing = 'require ["duplicate", "reject", "fileinto"]; if duplicate :uniqueid "u1" { keep; } fileinto "A"; reject "x";'
    assert execute(failing, env=env).error is not None
    assert execute('require "duplicate"; if duplicate :uniqueid "u1" { discard; }', env=env).actions == [
        Keep(implicit=True)
    ]
    by_header = 'require "duplicate"; if duplicate :header "x-missing" { discard; }'
    assert execute(by_header, env=env).actions == [Keep(implicit=True)]


def test_vacation_rfc5230_rules() -> None:
    clock = [0.0]
    tracker = MemoryResponseTracker(lambda: clock[0])
    env = SieveEnvironment(now=lambda: NOW, vacation_tracker=tracker)
    script = 'require "vacation"; vacation :days 7 :handle "trip" "I am away";'
    first = execute(script, env=env)
    (reply,) = first.of_type(Vacation)
    assert reply.to == "coyote@desert.example.org"
    assert reply.from_address == "me@example.org"
    assert reply.subject.startswith("Auto: ¡Bip bip!")
    assert reply.seconds == 7 * 86400 and reply.in_reply_to == "<1@desert.example.org>"
    assert first.actions[-1] == Keep(implicit=True)  # vacation does not cancel keep
    assert execute(script, env=env).of_type(Vacation) == []  # already answered
    clock[0] += 8 * 86400
    assert len(execute(script, env=env).of_type(Vacation)) == 1
    fresh = SieveEnvironment(now=lambda: NOW, vacation_tracker=MemoryResponseTracker(lambda: 0.0))
    for header in (b"Auto-Submitted: auto-replied", b"Precedence: bulk", b"List-Id: <x.example>"):
        raw = MESSAGE.replace(b"\r\n\r\n", b"\r\n" + header + b"\r\n\r\n", 1)
        assert execute(script, raw, env=fresh).of_type(Vacation) == [], header
    for sender in ("MAILER-DAEMON@x.example", "owner-list@x.example", "list-request@x.example", ""):
        assert execute(script, env=fresh, envelope_from=sender).of_type(Vacation) == [], sender
    # Not addressed to us in To/Cc/Bcc: no reply; :addresses adds our aliases.
    assert execute(script, env=fresh, envelope_to="alias@example.org").of_type(Vacation) == []
    aliased = 'require "vacation"; vacation :addresses ["roadrunner+birds@acme.example.com"] "Away";'
    assert len(execute(aliased, env=fresh, envelope_to="alias@example.org").of_type(Vacation)) == 1
    seconds = execute('require "vacation-seconds"; vacation :seconds 0 :subject "S" :mime "x";', env=fresh)
    assert seconds.of_type(Vacation)[0].seconds == 0 and seconds.of_type(Vacation)[0].mime


def test_include_rfc6609() -> None:
    scripts = {
        ("personal", "spam"): 'require ["variables", "include", "fileinto"]; global "box"; fileinto "${box}"; return; discard;',
        ("global", "loop"): 'require "include"; include :global "loop";',
        ("personal", "broken"): "frob;",
    }
    env = SieveEnvironment(now=lambda: NOW, include_resolver=lambda name, location: scripts.get((location, name)))
    main = """
    require ["variables", "include"];
    global "box";
    set "box" "Spam";
    include :once "spam";
    include :once "spam";
    include :optional "missing";
    """
    assert execute(main, env=env).actions == [FileInto("Spam")]
    looped = execute('require "include"; include :global "loop";', env=env)
    assert looped.error is not None and "loop" in looped.error
    missing = execute('require "include"; include "missing";', env=env)
    assert missing.error is not None and "does not exist" in missing.error
    broken = execute('require "include"; include "broken";', env=env)
    assert broken.error is not None and "invalid" in broken.error


def test_spamtest_virustest_rfc5235() -> None:
    script = """
    require ["spamtestplus", "virustest", "relational", "comparator-i;ascii-numeric", "fileinto"];
    if spamtest :value "ge" :comparator "i;ascii-numeric" "5" { fileinto "Spam"; }
    if spamtest :percent :value "gt" :comparator "i;ascii-numeric" "80" { fileinto "VerySpam"; }
    if virustest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "Untested"; }
    """
    env = SieveEnvironment(now=lambda: NOW, spam_score=7, spam_percent=90)
    assert [a.mailbox for a in execute(script, env=env).actions] == ["Spam", "VerySpam", "Untested"]
    untested = SieveEnvironment(now=lambda: NOW)
    assert execute('require "spamtest"; if spamtest "0" { discard; }', env=untested).actions == [Discard()]


def test_regex_and_encoded_character() -> None:
    script = r"""
    require ["regex", "variables", "fileinto", "encoded-character"];
    if header :regex "from" "([a-z]+)@([[:alpha:].]+)" { fileinto "${1}-${2}"; }
    if header :contains "subject" "${hex:41}mazing" { fileinto "Hex"; }
    """
    assert [a.mailbox for a in execute(script).actions] == ["coyote-desert.example.org", "Hex"]


def test_redirect_limit_and_duplicates() -> None:
    script = 'redirect "a@x.example"; redirect "a@x.example"; redirect "b@x.example";'
    assert execute(script).actions == [Redirect("a@x.example"), Redirect("b@x.example")]
    limited = execute(script, limits=SieveLimits(max_redirects=1))
    assert limited.error is not None and "redirects" in limited.error
    assert limited.actions == [Keep(implicit=True)]


def test_limits_produce_error_with_implicit_keep() -> None:
    many_tests = 'if anyof(' + ", ".join(['header :contains "subject" "zzz"'] * 50) + ") { discard; }"
    result = execute(many_tests, limits=SieveLimits(max_steps=20))
    assert result.error is not None and "steps" in result.error
    assert result.actions == [Keep(implicit=True)]
    actions = execute('require ["fileinto"];' + "".join(f'fileinto "B{n}";' for n in range(5)),
                      limits=SieveLimits(max_actions=3))
    assert actions.error is not None and "actions" in actions.error
    edits = execute('require "editheader";' + 'addheader "X-A" "b";' * 5, limits=SieveLimits(max_header_edits=2))
    assert edits.error is not None and "header edits" in edits.error


def test_hostile_regex_is_cut_off() -> None:
    raw = b"Subject: " + b"a" * 5000 + b"!\r\n\r\nx\r\n"
    result = execute('require "regex"; if header :regex "subject" "^(a|aa)+$" { discard; }', raw)
    assert result.error is not None
    assert result.actions == [Keep(implicit=True)]


@pytest.mark.parametrize("stars", [1, 5, 30])
def test_glob_matching_stays_linear(stars: int) -> None:
    raw = b"Subject: " + b"ab" * 3000 + b"\r\n\r\nx\r\n"
    pattern = "*a" * stars + "*c"
    result = execute(f'if header :matches "subject" "{pattern}" {{ discard; }}', raw)
    assert result.error is None and result.actions == [Keep(implicit=True)]
