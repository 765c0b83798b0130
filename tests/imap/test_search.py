"""SEARCH, SORT and THREAD: parsing, a brute-force cross-check, RFC 5256 algorithms."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

from mailserve.core.mime import extract_text, parse_message
from mailserve.core.model import Message
from mailserve.imap import search as S
from mailserve.imap.search import (
    BadCharset,
    SearchContext,
    SearchMessage,
    SearchSyntaxError,
    evaluate,
    format_esearch,
    format_search,
    format_threads,
    parse_search,
    parse_search_command,
    parse_sort_command,
    parse_thread_command,
    saved_result,
    sequence_set_text,
)


def _result(d):
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


# -------------------------------------------------------------------------------------
# A mailbox built from generated messages
# -------------------------------------------------------------------------------------

WORDS = ["hello", "world", "Grüße", "STRASSE", "meeting", "lunch", "report", "x", "Hello"]
PEOPLE = ["alice@example.com", "Bob Smith <bob@example.org>", "carol@test.net", "Dän <dan@x.de>"]
FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Junk", "Work"]
BASE = calendar.timegm((2024, 3, 10, 0, 0, 0))


@dataclass
class Generated:
    raw: bytes
    internal_date: int
    keywords: frozenset
    modseq: int
    recent: bool
    sent: tuple | None  # (y, m, d) as written in Date:, None when absent


def _raw_message(subject, sender, to, cc, body, sent_ts, zone_minutes):
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}",
             "Content-Type: text/plain; charset=utf-8"]
    sent = None
    if cc:
        lines.append(f"Cc: {cc}")
    if sent_ts is not None:
        zone = timezone(timedelta(minutes=zone_minutes))
        local = datetime.fromtimestamp(sent_ts, zone)
        sign = "+" if zone_minutes >= 0 else "-"
        offset = f"{sign}{abs(zone_minutes) // 60:02d}{abs(zone_minutes) % 60:02d}"
        lines.append(local.strftime("Date: %a, %d %b %Y %H:%M:%S ") + offset)
        sent = (local.year, local.month, local.day)
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8")
    return raw, sent


messages_strategy = st.lists(
    st.builds(
        lambda subject, sender, to, cc, body, sent_ts, zone, idate, kws, modseq, recent: (
            _raw_message(" ".join(subject), sender, to, cc, " ".join(body), sent_ts, zone),
            idate, frozenset(kws), modseq, recent),
        st.lists(st.sampled_from(WORDS), max_size=3),
        st.sampled_from(PEOPLE),
        st.sampled_from(PEOPLE),
        st.one_of(st.none(), st.sampled_from(PEOPLE)),
        st.lists(st.sampled_from(WORDS), max_size=6),
        st.one_of(st.none(), st.integers(BASE, BASE + 6 * 86400)),
        st.sampled_from([0, -480, 330, 600, -60]),
        st.integers(BASE, BASE + 6 * 86400),
        st.sets(st.sampled_from(FLAGS)),
        st.integers(1, 20),
        st.booleans(),
    ),
    max_size=12,
)


class RawTextSource:
    """BODY/TEXT over the generated messages' decoded text (the property test's source)."""

    def __init__(self, raws: dict[int, bytes]) -> None:
        self.raws = raws

    async def matching(self, field, needle, message_ids):
        out = set()
        for mid in message_ids:
            raw = self.raws[mid]
            parsed = parse_message(raw)
            text = extract_text(raw, parsed)
            if field == "text":
                text = parsed.header.decode() + "\n" + text
            if needle.casefold() in text.casefold():
                out.add(mid)
        return out


def build_context(generated, saved_uids=frozenset()):
    messages, parsed_by_blob, raws, extra = [], {}, {}, {}
    uid = 0
    for seq, ((raw, sent), idate, kws, modseq, recent) in enumerate(generated, 1):
        uid += 1 + seq % 3  # UIDs with gaps
        blob_id = f"{seq:064x}"
        parsed_by_blob[blob_id] = parse_message(raw)
        message = Message(seq + 100, blob_id, len(raw), idate, kws, 0, {}, modseq)
        messages.append(SearchMessage(seq, uid, message, recent))
        raws[message.id] = raw
        extra[seq] = (raw, sent)
    context = SearchContext(messages, parsed_by_blob.__getitem__, RawTextSource(raws),
                            saved=frozenset(saved_uids), now=lambda: BASE + 3 * 86400)
    return context, extra


# -------------------------------------------------------------------------------------
# The brute-force evaluator: one message at a time, straight from the RFC text
# -------------------------------------------------------------------------------------


def _header_values(raw: bytes, name: str) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    out = []
    for line in head.split("\r\n"):
        field, _, value = line.partition(":")
        if field.lower() == name:
            out.append(value.strip())
    return out


def _in_set(n, ranges, largest):
    for lo, hi in ranges:
        lo = largest if lo is None else lo
        hi = largest if hi is None else hi
        if min(lo, hi) <= n <= max(lo, hi):
            return True
    return False


def brute(key, m: SearchMessage, context: SearchContext, extra) -> bool:
    raw, sent = extra[m.seq]
    msg = m.message
    if isinstance(key, S.All):
        return True
    if isinstance(key, S.AndKey):
        return all(brute(k, m, context, extra) for k in key.keys)
    if isinstance(key, S.OrKey):
        return brute(key.left, m, context, extra) or brute(key.right, m, context, extra)
    if isinstance(key, S.NotKey):
        return not brute(key.key, m, context, extra)
    if isinstance(key, S.FlagKey):
        has = any(k.lower() == key.flag.lower() for k in msg.keywords)
        return has == key.present
    if isinstance(key, S.RecentKey):
        return m.recent
    if isinstance(key, S.SetKey):
        if key.numbers.saved:
            return m.uid in context.saved
        if key.uid:
            largest = context.messages[-1].uid
            return _in_set(m.uid, key.numbers.ranges, largest)
        return _in_set(m.seq, key.numbers.ranges, len(context.messages))
    if isinstance(key, S.SizeKey):
        return len(raw) > key.size if key.larger else len(raw) < key.size
    if isinstance(key, S.ModSeqKey):
        return msg.modseq >= key.modseq
    if isinstance(key, S.AgeKey):
        age = context.now() - msg.internal_date
        return age >= key.seconds if key.older else age < key.seconds
    if isinstance(key, S.DateKey):
        if key.sent and sent is not None:
            day = date(*sent)
        else:
            day = datetime.fromtimestamp(msg.internal_date, UTC).date()
        return {"before": day < key.day, "on": day == key.day, "since": day >= key.day}[key.relation]
    if isinstance(key, S.HeaderKey):
        return any(key.text.casefold() in v.casefold() for v in _header_values(raw, key.name))
    if isinstance(key, S.TextKey):
        head, _, body = raw.decode().partition("\r\n\r\n")
        text = body if key.field == "body" else head + "\n" + body
        return key.text.casefold() in text.casefold()
    raise AssertionError(key)


# -------------------------------------------------------------------------------------
# Random search programs, as the command parser's tokens
# -------------------------------------------------------------------------------------

DAYS = [(BASE // 86400 + d) for d in range(-1, 8)]


def _date_token(day_number):
    return datetime.fromtimestamp(day_number * 86400, UTC).strftime("%d-%b-%Y")


seq_item = st.one_of(
    st.integers(1, 15).map(str),
    st.just("*"),
    st.tuples(st.integers(1, 40), st.integers(1, 40)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.integers(1, 15).map(lambda n: f"{n}:*"),
)
seq_set = st.lists(seq_item, min_size=1, max_size=3).map(",".join)
needle = st.one_of(st.sampled_from(WORDS + ["ell", "o w", "", "grüsse", "bob@", "SMITH", "ß"]),
                   st.text("abelorhw ", max_size=4))

simple_key = st.one_of(
    st.sampled_from(["ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED",
                     "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "NEW", "OLD", "RECENT"]).map(lambda k: [k]),
    st.tuples(st.sampled_from(["KEYWORD", "UNKEYWORD"]), st.sampled_from(["$Junk", "work", "Other"])).map(list),
    st.tuples(st.sampled_from(["FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"]),
              needle.map(lambda s: s.encode())).map(list),
    st.tuples(st.just("HEADER"), st.sampled_from([b"Date", b"subject", b"X-None"]),
              needle.map(lambda s: s.encode())).map(list),
    st.tuples(st.sampled_from(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]),
              st.sampled_from(DAYS).map(_date_token)).map(list),
    st.tuples(st.sampled_from(["LARGER", "SMALLER"]), st.integers(0, 200).map(str)).map(list),
    st.tuples(st.sampled_from(["OLDER", "YOUNGER"]), st.integers(0, 5 * 86400).map(str)).map(list),
    st.tuples(st.just("MODSEQ"), st.integers(0, 22).map(str)).map(list),
    seq_set.map(lambda s: [s]),
    st.tuples(st.just("UID"), seq_set).map(list),
    st.just(["$"]),
    st.just(["UID", "$"]),
)


def _compound(children):
    return st.one_of(
        children.map(lambda k: ["NOT", *k]),
        st.tuples(children, children).map(lambda t: ["OR", *t[0], *t[1]]),
        st.lists(children, min_size=1, max_size=3).map(lambda ks: [[t for k in ks for t in k]]),
    )


search_program = st.lists(st.recursive(simple_key, _compound, max_leaves=8), min_size=1, max_size=3).map(
    lambda ks: [t for k in ks for t in k])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages_strategy, search_program, st.sets(st.integers(1, 40)), st.booleans())
def test_evaluate_agrees_with_brute_force(generated, tokens, saved, uid):
    key = parse_search(tokens)
    context, extra = build_context(generated, saved)
    expected = [(m.uid if uid else m.seq) for m in context.messages if brute(key, m, context, extra)]
    got = _result(ensureDeferred(evaluate(key, context, uid=uid)))
    assert got == expected, (tokens, key)


# -------------------------------------------------------------------------------------
# Parsing
# -------------------------------------------------------------------------------------


def test_parse_search_builds_the_tree():
    key = parse_search(["OR", "SEEN", ["FROM", b"bob", "SINCE", "1-Feb-1994"], "NOT", "UID", "1:*"])
    assert key == S.AndKey((
        S.OrKey(S.FlagKey("\\Seen"), S.AndKey((S.HeaderKey("from", "bob"), S.DateKey("since", date(1994, 2, 1))))),
        S.NotKey(S.SetKey(S.SequenceSet(((1, None),)), uid=True)),
    ))
    assert parse_search(["new"]) == S.AndKey((S.RecentKey(), S.FlagKey("\\Seen", False)))
    assert parse_search(["MODSEQ", b"/flags/\\draft", "all", "620162338"]) == S.ModSeqKey(620162338)
    assert parse_search(["SENTON", b"01-Jan-2020"]) == S.DateKey("on", date(2020, 1, 1), sent=True)
    assert parse_search(["KEYWORD", "$Forwarded"]) == S.FlagKey("$Forwarded")


@pytest.mark.parametrize("tokens, reason", [
    ([], "missing"),
    (["FROM"], "missing"),
    (["BOGUS"], "unknown search key"),
    (["SINCE", "31-Feb-2020"], "not a valid date"),
    (["SINCE", "2020-01-01"], "date like"),
    (["LARGER", "-1"], "number"),
    (["LARGER", "99999999999"], "number"),
    (["UID", "0:5"], "sequence number"),
    (["1,,2"], "sequence number"),
    (["KEYWORD", "\\Seen"], "keyword"),
    (["HEADER", b"Bad Name", b"x"], "field name"),
    (["MODSEQ", b"/flags/x", "bogus", "5"], "MODSEQ"),
    ([[]], "empty"),
    (["FROM", b"\xff\xfe"], "UTF-8"),
    (["OR", "SEEN"], "missing"),
])
def test_parse_search_errors(tokens, reason):
    with pytest.raises(SearchSyntaxError, match=reason):
        parse_search(tokens)


def test_hostile_nesting_and_size_are_refused():
    with pytest.raises(SearchSyntaxError, match="nested deeper"):
        parse_search(["NOT"] * 1000 + ["ALL"])
    deep: list = ["ALL"]
    for _ in range(200):
        deep = [deep]
    with pytest.raises(SearchSyntaxError, match="nested deeper"):
        parse_search(deep)
    with pytest.raises(SearchSyntaxError, match="more than"):
        parse_search(["ALL"] * (S.MAX_KEYS + 1))


def test_charsets():
    assert parse_search_command(["CHARSET", "utf-8", "ALL"]).charset == "UTF-8"
    assert parse_search_command(["CHARSET", b"US-ASCII", "TEXT", b"x"]).charset == "US-ASCII"
    with pytest.raises(BadCharset) as info:
        parse_search_command(["CHARSET", "ISO-8859-1", "ALL"])
    assert info.value.supported == ("UTF-8", "US-ASCII")
    with pytest.raises(SearchSyntaxError):
        parse_search(["TEXT", "naïve".encode()], "US-ASCII")


def test_return_options():
    command = parse_search_command(["RETURN", ["MIN", "count", "MIN"], "ALL"])
    assert command.returns == ("MIN", "COUNT")
    assert parse_search_command(["RETURN", [], "ALL"]).returns == ("ALL",)
    assert parse_search_command(["ALL"]).returns is None
    with pytest.raises(SearchSyntaxError):
        parse_search_command(["RETURN", ["PARTIAL"], "ALL"])


def test_sort_and_thread_commands():
    sort_command = parse_sort_command([["REVERSE", "DATE", "subject"], "UTF-8", "ALL"])
    assert sort_command.criteria == (("DATE", True), ("SUBJECT", False))
    assert parse_thread_command(["references", "UTF-8", "SEEN"]).algorithm == "REFERENCES"
    for bad in ([["REVERSE"], "UTF-8", "ALL"], [["SIZE", "BOGUS"], "UTF-8", "ALL"],
                [["REVERSE", "REVERSE", "SIZE"], "UTF-8", "ALL"], [["SIZE"], "UTF-8"]):
        with pytest.raises(SearchSyntaxError):
            parse_sort_command(bad)
    with pytest.raises(SearchSyntaxError):
        parse_thread_command(["BYMOON", "UTF-8", "ALL"])
    with pytest.raises(BadCharset):
        parse_sort_command([["SIZE"], "KOI8-R", "ALL"])


# -------------------------------------------------------------------------------------
# Responses
# -------------------------------------------------------------------------------------


def test_sequence_set_compression():
    assert sequence_set_text([1, 2, 3, 5, 7, 8, 9, 20]) == "1:3,5,7:9,20"
    assert sequence_set_text([]) == ""
    assert sequence_set_text([4]) == "4"


def test_esearch_lines_rfc4731_examples():
    assert format_esearch([2, 10, 11], ["MIN", "COUNT"], tag="A282") == b'* ESEARCH (TAG "A282") MIN 2 COUNT 3'
    assert format_esearch([1, 2, 3, 5], ["ALL"], tag="A283", uid=True) == \
        b'* ESEARCH (TAG "A283") UID ALL 1:3,5'
    assert format_esearch([], ["MIN", "MAX", "ALL", "COUNT"], tag="A284") == b'* ESEARCH (TAG "A284") COUNT 0'
    assert format_esearch([4, 9], ["MAX"], tag="t", modseq=917162500) == b'* ESEARCH (TAG "t") MAX 9 MODSEQ 917162500'
    assert format_esearch([1], ["SAVE"], tag="t") is None
    assert format_search([2, 5, 6], modseq=917162500) == b"* SEARCH 2 5 6 (MODSEQ 917162500)"
    assert format_search([]) == b"* SEARCH"


def test_saved_results_rfc5182():
    assert saved_result([5, 3, 9], ["SAVE"]) == [3, 5, 9]
    assert saved_result([5, 3, 9], ["SAVE", "MIN"]) == [3]
    assert saved_result([5, 3, 9], ["SAVE", "MIN", "MAX"]) == [3, 9]
    assert saved_result([5, 3, 9], ["SAVE", "MIN", "COUNT"]) == [3, 5, 9]
    assert saved_result([5], ["MIN"]) is None


def _context_of(raws, **kwargs):
    generated = []
    for i, raw in enumerate(raws):
        generated.append(((raw, None), kwargs.get("dates", [BASE + i * 60] * len(raws))[i],
                          frozenset(), 1 + i, False))
    return build_context(generated)[0]


def test_huge_sequence_sets_are_not_expanded():
    context = _context_of([b"Subject: a\r\n\r\nx\r\n"] * 3)
    # UIDs are 2, 5, 6
    key = parse_search(["UID", "3:4294967295", "1:4294967295"])
    assert _result(ensureDeferred(evaluate(key, context, uid=True))) == [5, 6]
    assert _result(ensureDeferred(evaluate(parse_search(["UID", "4294967295:7"]), context))) == []
    assert _result(ensureDeferred(evaluate(parse_search(["UID", "9:*"]), context))) == [3]


def test_large_searches_run_through_run_blocking():
    calls = []

    async def run_blocking(fn):
        calls.append(fn)
        return fn()

    context = _context_of([b"Subject: a\r\n\r\nx\r\n"] * (S.INLINE_LIMIT + 1))
    context.run_blocking = run_blocking
    found = _result(ensureDeferred(evaluate(parse_search(["SUBJECT", b"A"]), context)))
    assert len(found) == S.INLINE_LIMIT + 1 and calls


def test_header_search_decodes_encoded_words():
    context = _context_of([b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nx\r\n", b"Subject: nope\r\n\r\n"])
    assert _result(ensureDeferred(evaluate(parse_search(["SUBJECT", "grüsse".encode()]), context))) == [1]
    assert _result(ensureDeferred(evaluate(parse_search(["HEADER", b"subject", b""]), context))) == [1, 2]


# -------------------------------------------------------------------------------------
# SORT (RFC 5256)
# -------------------------------------------------------------------------------------


def _msg(subject=None, sender=None, to=None, cc=None, date_header=None, message_id=None,
         references=None, in_reply_to=None, body="x"):
    lines = []
    for name, value in (("Subject", subject), ("From", sender), ("To", to), ("Cc", cc),
                        ("Date", date_header), ("Message-ID", message_id),
                        ("References", references), ("In-Reply-To", in_reply_to)):
        if value is not None:
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def _sort(criteria, raws, dates=None, uid=False):
    context = _context_of(raws, dates=dates or [BASE + i for i in range(len(raws))])
    return _result(ensureDeferred(S.sort(S.parse_sort_criteria(criteria), S.All(), context, uid)))


def test_sort_subject_uses_base_subject_and_ties_keep_sequence_order():
    raws = [_msg("Re: beta"), _msg("alpha"), _msg("[list] Fwd: Beta"), _msg("gamma (fwd)"), _msg("ALPHA")]
    assert _sort(["SUBJECT"], raws) == [2, 5, 1, 3, 4]
    assert _sort(["REVERSE", "SUBJECT"], raws) == [4, 1, 3, 2, 5]


def test_sort_date_falls_back_to_internal_date_and_arrival():
    raws = [
        _msg("a", date_header="Mon, 11 Mar 2024 10:00:00 +0000"),
        _msg("b"),  # no Date: the internal date is used
        _msg("c", date_header="Mon, 11 Mar 2024 12:00:00 +0500"),  # 07:00 UTC
    ]
    dates = [BASE + 5 * 86400, BASE, BASE + 86400 * 2]
    assert _sort(["DATE"], raws, dates) == [2, 3, 1]
    assert _sort(["ARRIVAL"], raws, dates) == [2, 3, 1]
    assert _sort(["REVERSE", "ARRIVAL"], raws, dates) == [1, 3, 2]


def test_sort_addresses_size_and_display():
    raws = [
        _msg(sender="Zed <aaa@x.org>", to="m@x", cc="b@x"),
        _msg(sender="bob@x.org", to="a@x"),
        _msg(sender="Amy <zzz@x.org>", to="z@x", cc="a@x", body="x" * 100),
    ]
    assert _sort(["FROM"], raws) == [1, 2, 3]
    assert _sort(["DISPLAYFROM"], raws) == [3, 2, 1]
    assert _sort(["TO"], raws) == [2, 1, 3]
    assert _sort(["CC"], raws) == [2, 3, 1]  # no Cc sorts as the empty string
    assert _sort(["REVERSE", "SIZE", "FROM"], raws) == [3, 1, 2]


# -------------------------------------------------------------------------------------
# THREAD (RFC 5256 §3)
# -------------------------------------------------------------------------------------


def test_format_threads_rfc5256_examples():
    N = S.ThreadNode
    threads = [N(2), N(3, [N(6, [N(4, [N(23)]), N(44, [N(7, [N(96)])])])])]
    assert format_threads(threads) == b"(2)(3 6 (4 23)(44 7 96))"
    assert format_threads([N(None, [N(3), N(5)])]) == b"((3)(5))"
    assert format_threads([]) == b""


def test_format_threads_deep_chain_without_recursion():
    root = node = S.ThreadNode(1)
    for n in range(2, 5000):
        child = S.ThreadNode(n)
        node.children.append(child)
        node = child
    assert format_threads([root]).count(b" ") == 4998


def _thread(algorithm, raws, dates=None):
    context = _context_of(raws, dates=dates or [BASE + i for i in range(len(raws))])
    nodes = _result(ensureDeferred(S.thread(algorithm, S.All(), context)))
    return format_threads(nodes)


def _d(hour):
    return f"Mon, 11 Mar 2024 {hour:02d}:00:00 +0000"


def test_orderedsubject():
    raws = [
        _msg("Re: lunch", date_header=_d(9)),
        _msg("report", date_header=_d(8)),
        _msg("lunch", date_header=_d(7)),
        _msg("Re: lunch", date_header=_d(10)),
        _msg("Re: report", date_header=_d(11)),
    ]
    assert _thread("ORDEREDSUBJECT", raws) == b"(3 (1)(4))(2 5)"


def test_references_links_replies_and_dummies():
    raws = [
        _msg("root", message_id="<a@x>", date_header=_d(1)),
        _msg("Re: root", message_id="<b@x>", references="<a@x>", date_header=_d(2)),
        _msg("Re: root", message_id="<c@x>", references="<a@x> <b@x>", date_header=_d(3)),
        _msg("Re: root", message_id="<d@x>", in_reply_to="<a@x>", date_header=_d(4)),
        # two replies to a message we do not have: a dummy parent at the root
        _msg("other", message_id="<e@x>", references="<missing@x>", date_header=_d(5)),
        _msg("Re: other", message_id="<f@x>", references="<missing@x>", date_header=_d(6)),
    ]
    assert _thread("REFERENCES", raws) == b"(1 (2 3)(4))((5)(6))"


def test_references_single_child_dummy_is_promoted_and_subjects_merge():
    raws = [
        # parent missing, one child: the dummy disappears
        _msg("alone", message_id="<x1@x>", references="<gone@x>", date_header=_d(1)),
        # no references, but the same base subject as message 1: merged under it
        _msg("Re: alone", message_id="<x2@x>", date_header=_d(2)),
        # same subject, neither a reply: both become children of a new dummy
        _msg("topic", message_id="<t1@x>", date_header=_d(3)),
        _msg("topic", message_id="<t2@x>", date_header=_d(4)),
    ]
    assert _thread("REFERENCES", raws) == b"(1 2)((3)(4))"


def test_references_duplicates_loops_and_missing_ids():
    raws = [
        _msg("one", message_id="<dup@x>", date_header=_d(1)),
        _msg("two", message_id="<dup@x>", date_header=_d(2)),  # duplicate id: its own thread
        _msg("three", message_id="<l1@x>", references="<l2@x>", date_header=_d(3)),
        _msg("four", message_id="<l2@x>", references="<l1@x>", date_header=_d(4)),  # would loop
        _msg("five", date_header=_d(5)),  # no Message-ID at all
        _msg("six", message_id="<s@x>", references="<s@x>", date_header=_d(6)),  # refers to itself
    ]
    out = _thread("REFERENCES", raws)
    assert out == b"(1)(2)(4 3)(5)(6)"


def test_references_sorts_siblings_by_sent_date():
    raws = [
        _msg("p", message_id="<p@x>", date_header=_d(1)),
        _msg("Re: p", message_id="<late@x>", references="<p@x>", date_header=_d(9)),
        _msg("Re: p", message_id="<early@x>", references="<p@x>", date_header=_d(2)),
        _msg("q", message_id="<q@x>", date_header=_d(0)),
    ]
    assert _thread("REFERENCES", raws) == b"(4)(1 (3)(2))"


def test_references_on_a_very_deep_thread():
    """Each message replying to the previous one: no recursion limit, no quadratic blow-up."""
    count = 2000
    raws = [_msg("deep", message_id="<m0@x>", date_header=_d(0))]
    for n in range(1, count):
        raws.append(_msg("Re: deep", message_id=f"<m{n}@x>", references=f"<m{n - 1}@x>",
                         date_header=_d(0)))
    out = _thread("REFERENCES", raws)
    assert out == b"(" + b" ".join(b"%d" % n for n in range(1, count + 1)) + b")"


sort_criteria = st.lists(
    st.tuples(st.sampled_from(S.SORT_KEYS), st.booleans()), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages_strategy, sort_criteria)
def test_sort_orders_by_each_criterion_in_turn(generated, criteria):
    """SORT returns every message once, ordered lexicographically by the criteria
    (each possibly reversed) and then by sequence number (RFC 5256 §3)."""
    context, _ = build_context(generated)
    out = _result(ensureDeferred(S.sort(criteria, S.All(), context)))
    assert sorted(out) == [m.seq for m in context.messages]

    def sort_key(seq):
        values = []
        for name, reverse in criteria:
            value = S._sort_value(name, context, seq - 1)
            values.append(_Reversed(value) if reverse else value)
        return (*values, seq)

    assert out == sorted(out, key=sort_key)


class _Reversed:
    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return other.value < self.value

    def __eq__(self, other):
        return self.value == other.value
