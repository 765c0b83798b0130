"""The examples the Sieve RFCs themselves give, one test per extension, run against messages.

Where an RFC states the outcome (RFC 5231 §7's true/false table, RFC 5229 §4's modifier table,
RFC 5228 §2.4.2.4's encoded-character list) the test asserts exactly that; where it only shows
a script, a message is built for each path through it and the actions are asserted.
"""

from __future__ import annotations

import datetime

import pytest

from mailserve.sieve import (
    Discard,
    Ereject,
    FileInto,
    Keep,
    MemoryResponseTracker,
    Redirect,
    Reject,
    SieveEnvironment,
    SieveMessage,
    SieveResult,
    SieveSyntaxError,
    Vacation,
    compile_script,
    run,
)

NOW = datetime.datetime(2007, 7, 2, 10, 0, 0, tzinfo=datetime.UTC)


def message(*headers: str, body: str = "Hello.\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def execute(script: str, raw: bytes, env: SieveEnvironment | None = None,
            envelope_from: str = "sender@example.net", envelope_to: str = "me@example.com") -> SieveResult:
    environment = env or SieveEnvironment(now=lambda: NOW, mailbox_exists=lambda name: name == "INBOX")
    result = run(compile_script(script), SieveMessage(raw, envelope_from, envelope_to), environment)
    assert result.error is None, result.error
    return result


# -- RFC 5228 (base language) -------------------------------------------------------------------

RFC5228_SECTION_9 = """
#
# Example Sieve Filter
# Declare any optional features or extension used by the script
#
require ["fileinto"];

#
# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter mailbox
#
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
        fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
        keep;               # keep in "In" mailbox
        }

#
# Try and catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        fileinto "spam";   # move to "spam" mailbox
        }
else
        {
        # Move all other (non-company) mail to "personal"
        # mailbox.
        fileinto "personal";
        }
"""


RFC5228_S9_MESSAGES = [
        (("Sender: owner-ietf-mta-filters@imc.org", "From: a@else.example", "To: me@example.com"),
         [FileInto("filter")]),
        (("From: colleague@Example.COM", "To: someone@else.example"), [Keep()]),
        (("From: stranger@else.example", "To: other@else.example"), [FileInto("spam")]),
        (("From: stranger@else.example", "Cc: me@example.com", "Subject: MAKE big MONEY FAST now"),
         [FileInto("spam")]),
        # Mail to me@example.com is company mail: the second branch wins before the spam check.
        (("From: stranger@else.example", "To: me@example.com", "Subject: MAKE big MONEY FAST now"), [Keep()]),
        (("From: friend@else.example", "Cc: me@example.com", "Subject: lunch"), [FileInto("personal")]),
]


@pytest.mark.parametrize(("headers", "expected"), RFC5228_S9_MESSAGES)
def test_rfc5228_section_9_complete_example(headers, expected):
    assert execute(RFC5228_SECTION_9, message(*headers)).actions == expected


def test_rfc5228_section_3_1_if_elsif_else():
    script = """
    if header :contains ["From"] ["coyote"] {
        redirect "acm@example.com";
    } elsif header :contains "Subject" "$$$" {
        redirect "postmaster@example.com";
    } else {
        redirect "field@example.com";
    }
    """
    assert execute(script, message("From: Coyote <coyote@desert.example>")).actions == [
        Redirect("acm@example.com")]
    assert execute(script, message("From: x@y.example", "Subject: earn $$$")).actions == [
        Redirect("postmaster@example.com")]
    assert execute(script, message("From: x@y.example", "Subject: hi")).actions == [
        Redirect("field@example.com")]


def test_rfc5228_section_5_tests():
    raw = message("From: tim@example.com", "Date: Mon, 2 Jul 2007 09:00:00 +0000", "X-Caffeine: C8H10N4O2",
                  body="x" * 600_000)
    # §5.1 address, §5.4 envelope, §5.5 exists, §5.7 header with the i;octet comparator, §5.9 size.
    assert execute('if address :is :all "from" "tim@example.com" { discard; }', raw).actions == [Discard()]
    assert execute('require "envelope"; if envelope :all :is "from" "tim@example.com" { discard; }',
                   raw, envelope_from="tim@example.com").actions == [Discard()]
    assert execute('if exists ["From","Date"] { discard; }', raw).actions == [Discard()]
    assert execute('if exists ["From","Reply-To"] { discard; }', raw).actions == [Keep(implicit=True)]
    octet = 'if header :contains :comparator "i;octet" "X-Caffeine" "C8H10" { discard; }'
    assert execute(octet, raw).actions == [Discard()]
    assert execute(octet.replace("C8H10", "c8h10"), raw).actions == [Keep(implicit=True)]
    assert execute('if size :over 500K { discard; }', raw).actions == [Discard()]
    assert execute('if size :under 1M { discard; }', message("Subject: small")).actions == [Discard()]


def test_rfc5228_section_2_7_comparators_and_match_types():
    raw = message("Subject: Frobnitz ? report")
    assert execute('if header :matches "subject" "frob*" { discard; }', raw).actions == [Discard()]
    # "\\?" matches a literal question mark only (§2.7.1).
    assert execute(r'if header :matches "subject" "*\\?*" { discard; }', raw).actions == [Discard()]
    assert execute(r'if header :matches "subject" "Frobnitz\\?" { discard; }', raw).actions == [
        Keep(implicit=True)]
    assert execute('if header :is "subject" "FROBNITZ ? REPORT" { discard; }', raw).actions == [Discard()]


ENCODED_CHARACTER_EXAMPLES = [  # RFC 5228 §2.4.2.4, in the order the RFC lists them
    ("$${hex:40}", "$@"),
    ("${hex: 40 }", "@"),
    ("${HEX: 40}", "@"),
    ("${hex:40", "${hex:40"),
    ("${hex:400}", "${hex:400}"),
    ("${hex:4${hex:30}}", "${hex:40}"),
    ("${unicode:40}", "@"),
    ("${ unicode:40}", "${ unicode:40}"),
    ("${UNICODE:40}", "@"),
    ("${UnICoDE:0000040}", "@"),
    ("${Unicode:40}", "@"),
    ("${Unicode:Cool}", "${Unicode:Cool}"),
]


@pytest.mark.parametrize(("encoded", "decoded"), ENCODED_CHARACTER_EXAMPLES)
def test_rfc5228_encoded_character_examples(encoded, decoded):
    script = f'require ["encoded-character", "fileinto"];\nfileinto "{encoded}";'
    assert execute(script, message("Subject: x")).actions == [FileInto(decoded)]


@pytest.mark.parametrize("invalid", ["${unicode:200000}", "${Unicode:DF01}"])
def test_rfc5228_encoded_character_errors(invalid):
    # "It is an error for a script to use a hexadecimal value that isn't in either the range 0 to
    # D7FF or the range E000 to 10FFFF" (§2.4.2.4): caught at upload, with the position.
    with pytest.raises(SieveSyntaxError) as raised:
        compile_script(f'require ["encoded-character", "fileinto"];\nfileinto "{invalid}";')
    assert (raised.value.line, raised.value.column) == (2, 10)


# -- RFC 5429 reject and ereject ------------------------------------------------------------------

REJECT_EXAMPLE = """
require ["reject"];

if header :contains "from" "coyote@desert.example.org" {
    reject text:
I am not taking mail from you, and I don't
want your birdseed, either!
.
;
}
"""


def test_rfc5429_reject_example():
    script = REJECT_EXAMPLE
    result = execute(script, message("From: coyote@desert.example.org"))
    assert result.actions == [
        Reject("I am not taking mail from you, and I don't\r\nwant your birdseed, either!\r\n")]
    assert not result.implicit_keep
    assert execute(script, message("From: friend@example.org")).actions == [Keep(implicit=True)]


def test_rfc5429_ereject_example():
    script = """
    require ["ereject"];

    if address "from" "someone.i.hate@example.com" {
        ereject "I no longer accept mail from this address";
    }
    """
    assert execute(script, message("From: Someone.I.Hate@example.com")).actions == [
        Ereject("I no longer accept mail from this address")]


# -- RFC 3894 copy ----------------------------------------------------------------------------------

COPY_EXAMPLE = """
require ["copy", "fileinto"];
if header :contains "subject" "[acme-users]" {
    fileinto :copy "acme";
    redirect :copy "archive@example.net";
}
"""


def test_rfc3894_copy_keeps_the_implicit_keep():
    assert execute(COPY_EXAMPLE, message("Subject: [acme-users] news")).actions == [
        FileInto("acme", copy=True), Redirect("archive@example.net", copy=True), Keep(implicit=True)]


# -- RFC 5233 subaddress -----------------------------------------------------------------------------

RFC5233_SECTION_4 = """
require ["envelope", "subaddress", "fileinto"];

# In this example the same user account receives mail for both
# "ken@example.com" and "postmaster@example.com"

# File all messages to postmaster into a single mailbox,
# ignoring the :detail part.
if envelope :user "to" "postmaster" {
    fileinto "inbox.postmaster";
    stop;
}

# File mailing list messages (subscribed as "ken+mta-filters").
if envelope :detail "to" "mta-filters" {
    fileinto "inbox.ietf-mta-filters";
}

# Redirect all mail sent to "ken+foo".
if envelope :detail "to" "foo" {
    redirect "ken@example.net";
}
"""


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("postmaster+anything@example.com", [FileInto("inbox.postmaster")]),
        ("postmaster@example.com", [FileInto("inbox.postmaster")]),
        ("ken+mta-filters@example.com", [FileInto("inbox.ietf-mta-filters")]),
        ("ken+foo@example.com", [Redirect("ken@example.net")]),
        ("ken@example.com", [Keep(implicit=True)]),
    ],
)
def test_rfc5233_section_4_example(recipient, expected):
    assert execute(RFC5233_SECTION_4, message("Subject: x"), envelope_to=recipient).actions == expected


def test_rfc5233_empty_and_missing_detail():
    # §4: "ken+@example.com" has an empty detail; "ken@example.com" has none, so :detail
    # matches no key at all, not even "*".
    script = 'require ["envelope", "subaddress"]; if envelope :detail :matches "to" "*" { discard; }'
    assert execute(script, message("Subject: x"), envelope_to="ken+@example.com").actions == [Discard()]
    assert execute(script, message("Subject: x"), envelope_to="ken@example.com").actions == [
        Keep(implicit=True)]
    empty = 'require ["envelope", "subaddress"]; if envelope :detail "to" "" { discard; }'
    assert execute(empty, message("Subject: x"), envelope_to="ken+@example.com").actions == [Discard()]


# -- RFC 5232 imap4flags -----------------------------------------------------------------------------

def test_rfc5232_examples():
    deleted_if_big = 'require "imap4flags";\nif size :over 500K {\n    setflag "\\\\Deleted";\n}'
    big = message("Subject: big", body="x" * 600_000)
    assert execute(deleted_if_big, big).actions == [Keep(("\\Deleted",), implicit=True)]
    assert execute(deleted_if_big, message("Subject: small")).actions == [Keep(implicit=True)]

    boss = """
    require ["imap4flags", "fileinto", "variables"];
    if header :contains "from" "boss@frobnitzm.example.edu" {
        setflag "flagvar" "\\\\Flagged";
        fileinto :flags "${flagvar}" "INBOX.From Boss";
    }
    """
    assert execute(boss, message("From: boss@frobnitzm.example.edu")).actions == [
        FileInto("INBOX.From Boss", ("\\Flagged",))]

    # §5: hasflag compares each flag of the variable; duplicates and case collapse.
    has = """
    require ["imap4flags", "fileinto"];
    addflag ["\\\\Seen", "\\\\seen", "$MDNSent"];
    if hasflag :contains "MDN" { fileinto "A"; }
    if hasflag :is ["\\\\SEEN", "nothing"] { fileinto "B"; }
    if not hasflag "\\\\Answered" { fileinto "C"; }
    """
    assert execute(has, message("Subject: x")).actions == [
        FileInto("A", ("\\Seen", "$MDNSent")), FileInto("B", ("\\Seen", "$MDNSent")),
        FileInto("C", ("\\Seen", "$MDNSent"))]


# -- RFC 5229 variables ------------------------------------------------------------------------------

def test_rfc5229_section_3_example():
    script = """
    require ["variables", "vacation"];
    set "honorific"  "Mr";
    set "first_name" "Wile";
    set "last_name"  "Coyote";
    set "vacation" text:
Dear ${HONORIFIC} ${last_name},
I'm out, please leave a message after the meep.
.
;
    vacation :days 1 "${vacation}";
    """
    env = SieveEnvironment(now=lambda: NOW, vacation_tracker=MemoryResponseTracker(lambda: 0.0))
    (reply,) = execute(script, message("From: wile@acme.example", "To: me@example.com"), env).of_type(Vacation)
    assert reply.body == "Dear Mr Coyote,\r\nI'm out, please leave a message after the meep.\r\n"


@pytest.mark.parametrize(
    ("modifiers", "expected"),
    [  # RFC 5229 §4, with a = "juMBlEd lETteRS"
        (":length", "15"),
        (":lower", "jumbled letters"),
        (":upperfirst", "JuMBlEd lETteRS"),
        (":upperfirst :lower", "Jumbled letters"),
        (":lowerfirst :upper", "jUMBLED LETTERS"),
    ],
)
def test_rfc5229_section_4_modifiers(modifiers, expected):
    script = f"""
    require ["variables", "fileinto"];
    set "a" "juMBlEd lETteRS";
    set {modifiers} "b" "${{a}}";
    fileinto "${{b}}";
    """
    assert execute(script, message("Subject: x")).actions == [FileInto(expected)]


def test_rfc5229_quotewildcard_and_unknown_namespaces():
    script = r"""
    require ["variables", "fileinto"];
    set :quotewildcard "b" "Rock*";
    if string :is "${b}" "Rock\\*" { fileinto "quoted"; }
    fileinto "[${unknown}] ${a-b} ${} ${1x}";
    """
    # §3: an unset variable is empty; what is not a variable reference stays as written.
    assert execute(script, message("Subject: x")).actions == [
        FileInto("quoted"), FileInto("[] ${a-b} ${} ${1x}")]
    # §3: "References to namespaces without a prior require statement for the relevant
    # extension MUST cause an error."
    with pytest.raises(SieveSyntaxError, match="unknown namespace 'com'") as raised:
        compile_script('require ["variables", "fileinto"];\nfileinto "x${com.example.x}";')
    assert (raised.value.line, raised.value.column) == (2, 10)
    global_ok = 'require ["variables", "include", "fileinto"]; global "box"; fileinto "a${global.box}b";'
    assert execute(global_ok, message("Subject: x")).actions == [FileInto("ab")]


def test_rfc5229_match_variables():
    # §3.2: ${0} is the whole match; numbered variables are the wildcard matches in order.
    script = """
    require ["variables", "fileinto"];
    if header :matches "List-ID" "*<*@*" {
        fileinto "INBOX.lists.${2}"; stop;
    }
    """
    raw = message('List-ID: "Dovecot list" <dovecot@dovecot.example>')
    assert execute(script, raw).actions == [FileInto("INBOX.lists.dovecot")]


# -- RFC 5231 relational -----------------------------------------------------------------------------

RFC5231_MESSAGE = message(
    "Received: ...", "Received: ...", "Subject: example", "To: foo@example.com, baz@example.com",
    "CC: qux@example.com",
)


@pytest.mark.parametrize(
    ("test", "outcome"),
    [  # RFC 5231 §7: the example message and which tests are true
        ('address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', True),
        (('anyof ( address :count "ge" :comparator "i;ascii-numeric" ["to"] ["3"],'
          ' address :count "ge" :comparator "i;ascii-numeric" ["cc"] ["3"] )'), False),
        ('header :count "ge" :comparator "i;ascii-numeric" ["received"] ["3"]', False),
        ('header :count "ge" :comparator "i;ascii-numeric" ["received", "subject"] ["3"]', True),
        ('header :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', False),
    ],
)
def test_rfc5231_section_7_examples(test, outcome):
    script = f'require ["relational", "comparator-i;ascii-numeric"];\nif {test} {{ discard; }}'
    expected = [Discard()] if outcome else [Keep(implicit=True)]
    assert execute(script, RFC5231_MESSAGE).actions == expected


def test_rfc5231_value_comparisons():
    script = """
    require ["relational", "comparator-i;ascii-numeric", "fileinto"];
    if header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"] { fileinto "urgent"; }
    if header :value "gt" ["subject"] ["M"] { fileinto "late-alphabet"; }
    """
    assert [a.mailbox for a in execute(script, message("X-Priority: 1", "Subject: zebra")).actions] == [
        "urgent", "late-alphabet"]
    # i;ascii-numeric: a value not starting with a digit is positive infinity (RFC 4790 §9.1).
    assert execute(script, message("X-Priority: high", "Subject: apple")).actions == [Keep(implicit=True)]


# -- RFC 5173 body -----------------------------------------------------------------------------------

MULTIPART = (
    "From: agent@example.org", "Subject: plans", "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="b1"',
)
MULTIPART_BODY = (
    "--b1\r\nContent-Type: text/plain\r\n\r\nThe MISSILE is ready.\r\n"
    "--b1\r\nContent-Type: audio/mp3\r\nContent-Transfer-Encoding: base64\r\n\r\nSUQzAwAAAAAA\r\n"
    "--b1--\r\n"
)

RFC5173_SECTION_7 = """
require ["body", "fileinto"];

# Save any message with any text MIME part that contains the
# words "missile" or "coordinates" in the "secrets" folder.

if body :content "text" :contains ["missile", "coordinates"] {
        fileinto "secrets";
}

# Save any message with an audio/mp3 MIME part in
# the "jukebox" folder.

if body :content "audio/mp3" :contains "" {
        fileinto "jukebox";
}
"""


def test_rfc5173_section_7_example():
    raw = message(*MULTIPART, body=MULTIPART_BODY)
    assert execute(RFC5173_SECTION_7, raw).actions == [FileInto("secrets"), FileInto("jukebox")]
    assert execute(RFC5173_SECTION_7, message("Subject: plain", body="nothing here\r\n")).actions == [
        Keep(implicit=True)]


def test_rfc5173_raw_and_text_transforms():
    raw = message(*MULTIPART, body=MULTIPART_BODY)
    script = """
    require ["body", "fileinto"];
    if body :raw :contains "Content-Type: audio/mp3" { fileinto "raw"; }
    if body :text :contains "Content-Type" { fileinto "never"; }
    if body :text :contains "missile" { fileinto "text"; }
    """
    assert execute(script, raw).actions == [FileInto("raw"), FileInto("text")]


# -- RFC 5260 date and index -------------------------------------------------------------------------

OFFICE_HOURS = """
require ["date", "relational", "fileinto"];
if allof(header :is "from" "boss@example.com",
         date :value "ge" :originalzone "date" "hour" "09",
         date :value "lt" :originalzone "date" "hour" "17")
{
    fileinto "urgent";
}
"""


def test_rfc5260_date_examples():
    office_hours = OFFICE_HOURS
    at = "Date: Mon, 2 Jul 2007 {} -0700"
    assert execute(office_hours, message("From: boss@example.com", at.format("16:59:59"))).actions == [
        FileInto("urgent")]
    assert execute(office_hours, message("From: boss@example.com", at.format("17:00:00"))).actions == [
        Keep(implicit=True)]

    vacation_week = """
    require ["date", "relational", "vacation"];
    if allof(currentdate :value "ge" "date" "2007-06-30",
             currentdate :value "le" "date" "2007-07-07")
    {
        vacation :days 7  "I'm away during the first week in July.";
    }
    """
    env = SieveEnvironment(now=lambda: NOW, vacation_tracker=MemoryResponseTracker(lambda: 0.0))
    replies = execute(vacation_week, message("From: x@example.net", "To: me@example.com"), env).of_type(Vacation)
    assert [r.body for r in replies] == ["I'm away during the first week in July."]
    later = SieveEnvironment(now=lambda: NOW + datetime.timedelta(days=6),
                             vacation_tracker=MemoryResponseTracker(lambda: 0.0))
    assert execute(vacation_week, message("From: x@example.net", "To: me@example.com"), later).of_type(
        Vacation) == []


def test_rfc5260_index_examples():
    raw = message(
        "Received: from b.example by me.example; Mon, 2 Jul 2007 12:00:00 +0000",
        "Received: from a.example by b.example; Sun, 1 Jul 2007 23:00:00 +0000",
        "X-Tag: first", "X-Tag: second", "X-Tag: third",
    )
    script = """
    require ["date", "index", "fileinto"];
    if date :index 1 :zone "+0000" "received" "date" "2007-07-02" { fileinto "newest"; }
    if date :index 1 :last :zone "+0000" "received" "date" "2007-07-01" { fileinto "oldest"; }
    if header :index 2 "x-tag" "second" { fileinto "second"; }
    if header :index 1 :last "x-tag" "third" { fileinto "last"; }
    if header :index 4 "x-tag" "*" { fileinto "never"; }
    """
    assert [a.mailbox for a in execute(script, raw).actions] == ["newest", "oldest", "second", "last"]


# -- RFC 5293 editheader -----------------------------------------------------------------------------

def test_rfc5293_examples():
    script = """
    require ["editheader", "index", "fileinto"];
    addheader "X-Source" "mailserve";
    deleteheader :index 1 :is "X-Tag" "first";
    deleteheader :matches "X-Spam-Flag" "Y*";
    deleteheader "X-Spam*";
    if header :is "X-Tag" "second" { fileinto "edited"; }
    if not exists "X-Spam-Flag" { fileinto "clean"; }
    """
    raw = message("X-Tag: first", "X-Tag: second", "X-Spam-Flag: YES", "X-Spam*: odd but legal", "Subject: s")
    result = execute(script, raw)
    assert result.of_type(FileInto) == [FileInto("edited"), FileInto("clean")]
    # The field name is a name, not a pattern (§5): "X-Spam*" deletes only a field of that name.
    assert result.headers == [("X-Source", "mailserve"), ("X-Tag", "second"), ("Subject", "s")]


# -- RFC 5490 mailbox --------------------------------------------------------------------------------

def test_rfc5490_examples():
    script = """
    require ["fileinto", "reject", "mailbox"];
    if mailboxexists "INBOX.Partners" {
        fileinto "INBOX.Partners";
    } else {
        reject "This message was not accepted by the Mailstore";
    }
    """
    exists = SieveEnvironment(now=lambda: NOW, mailbox_exists=lambda name: name == "INBOX.Partners")
    assert execute(script, message("Subject: x"), exists).actions == [FileInto("INBOX.Partners")]
    assert execute(script, message("Subject: x")).actions == [
        Reject("This message was not accepted by the Mailstore")]
    create = 'require ["fileinto", "mailbox"]; fileinto :create "INBOX.folder";'
    assert execute(create, message("Subject: x")).actions == [FileInto("INBOX.folder", create=True)]


# -- RFC 7352 duplicate ------------------------------------------------------------------------------

def test_rfc7352_examples():
    clock = [1_000_000.0]
    env = SieveEnvironment(now=lambda: NOW, duplicate_tracker=MemoryResponseTracker(lambda: clock[0]))
    trash = """
    require ["duplicate", "fileinto", "mailbox"];

    if duplicate {
        fileinto :create "Trash/Duplicate";
    }
    """
    raw = message("Message-ID: <42@example.net>", "Subject: once")
    assert execute(trash, raw, env).actions == [Keep(implicit=True)]
    assert execute(trash, raw, env).actions == [FileInto("Trash/Duplicate", create=True)]

    alerts = """
    require ["duplicate", "variables", "imap4flags", "fileinto"];

    if header :matches "subject" "ALERT: *" {
        if duplicate :seconds 60 :uniqueid "${1}" {
            setflag "\\\\seen";
        }
        fileinto "Alerts";
    }
    """
    alert = message("Subject: ALERT: disk full", "Message-ID: <a1@example.net>")
    again = message("Subject: ALERT: disk full", "Message-ID: <a2@example.net>")
    assert execute(alerts, alert, env).actions == [FileInto("Alerts")]
    assert execute(alerts, again, env).actions == [FileInto("Alerts", ("\\seen",))]
    clock[0] += 61
    assert execute(alerts, again, env).actions == [FileInto("Alerts")]


# -- RFC 5235 spamtest, spamtestplus, virustest ------------------------------------------------------

SPAMTEST = """
require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];
if spamtest :value "eq" :comparator "i;ascii-numeric" "0" {
    fileinto "INBOX.unclassified";
}
elsif spamtest :value "ge" :comparator "i;ascii-numeric" "3" {
    fileinto "INBOX.spam-trap";
}
"""

SPAMTESTPLUS = """
require ["spamtestplus", "fileinto", "relational", "comparator-i;ascii-numeric"];
if spamtest :value "eq" :comparator "i;ascii-numeric" "0" {
    fileinto "INBOX.unclassified";
}
elsif spamtest :percent :value "eq" :comparator "i;ascii-numeric" "0" {
    fileinto "INBOX.not-spam";
}
elsif spamtest :percent :value "lt" :comparator "i;ascii-numeric" "37" {
    fileinto "INBOX.spam-trap";
}
else {
    discard;
}
"""

VIRUSTEST = """
require ["virustest", "fileinto", "relational", "comparator-i;ascii-numeric"];
if virustest :value "eq" :comparator "i;ascii-numeric" "0" {
    fileinto "INBOX.unclassified";
}
if virustest :value "eq" :comparator "i;ascii-numeric" "4" {
    fileinto "INBOX.quarantine";
} elsif virustest :value "eq" :comparator "i;ascii-numeric" "5" {
    discard;
}
"""


@pytest.mark.parametrize(
    ("script", "scores", "expected"),
    [
        (SPAMTEST, {}, [FileInto("INBOX.unclassified")]),
        (SPAMTEST, {"spam_score": 1, "spam_percent": 0}, [Keep(implicit=True)]),
        (SPAMTEST, {"spam_score": 3, "spam_percent": 25}, [FileInto("INBOX.spam-trap")]),
        (SPAMTESTPLUS, {}, [FileInto("INBOX.unclassified")]),
        (SPAMTESTPLUS, {"spam_score": 1, "spam_percent": 0}, [FileInto("INBOX.not-spam")]),
        (SPAMTESTPLUS, {"spam_score": 4, "spam_percent": 36}, [FileInto("INBOX.spam-trap")]),
        (SPAMTESTPLUS, {"spam_score": 10, "spam_percent": 99}, [Discard()]),
        (VIRUSTEST, {}, [FileInto("INBOX.unclassified")]),
        (VIRUSTEST, {"virus_score": 1}, [Keep(implicit=True)]),
        (VIRUSTEST, {"virus_score": 4}, [FileInto("INBOX.quarantine")]),
        (VIRUSTEST, {"virus_score": 5}, [Discard()]),
    ],
)
def test_rfc5235_examples(script, scores, expected):
    env = SieveEnvironment(now=lambda: NOW, **scores)
    assert execute(script, message("Subject: x"), env).actions == expected


# -- RFC 5230 vacation -------------------------------------------------------------------------------

VACATION_EXAMPLE = """
require "vacation";
vacation :days 23 :addresses ["tjs@example.edu",
                              "ts4z@landru.example.edu"]
"I'm away until October 19.  If it's an emergency, call 911, I guess." ;
"""


def test_rfc5230_examples():
    script = VACATION_EXAMPLE
    env = SieveEnvironment(now=lambda: NOW, vacation_tracker=MemoryResponseTracker(lambda: 0.0))
    raw = message("From: friend@example.net", "To: ts4z@landru.example.edu", "Subject: lunch?",
                  "Message-ID: <l1@example.net>")
    result = execute(script, raw, env, envelope_from="friend@example.net", envelope_to="tjs@example.edu")
    (reply,) = result.of_type(Vacation)
    assert reply.to == "friend@example.net"
    assert reply.seconds == 23 * 86400
    assert reply.subject == "Auto: lunch?"  # §4.4's default subject
    assert reply.in_reply_to == "<l1@example.net>"
    assert result.actions[-1] == Keep(implicit=True)
    # The same sender within :days gets no second reply (§4.2).
    again = execute(script, raw, env, envelope_from="friend@example.net", envelope_to="tjs@example.edu")
    assert again.of_type(Vacation) == []

    with_subject = """
    require ["vacation", "variables"];
    if header :matches "subject" "*" { set "subjwas" ": ${1}"; }
    vacation :days 7 :from "hemingway@example.com" :subject "Out of office${subjwas}"
        "I'm out -- call me at +1 304 555 0123";
    """
    fresh = SieveEnvironment(now=lambda: NOW, vacation_tracker=MemoryResponseTracker(lambda: 0.0))
    (reply,) = execute(with_subject, message("From: a@example.net", "To: me@example.com", "Subject: hi"),
                       fresh).of_type(Vacation)
    assert (reply.from_address, reply.subject) == ("hemingway@example.com", "Out of office: hi")
