"""MailSearch: index candidates plus a scan of unindexed messages, verified exactly."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread

from mailserve.core import keys
from mailserve.core.indexer import SearchIndexer
from mailserve.core.mailcore import FLAGS_ADD, MailCore
from mailserve.core.search import MailSearch, index_query
from mailserve.imap.search import SearchContext, SearchMessage, evaluate, parse_search
from mailserve.storage.tantivy_index import TantivySearchIndex
from mailserve.storage.whoosh_index import WhooshSearchIndex

ACCOUNT = 3
INDEXES = {"tantivy": TantivySearchIndex, "whoosh": WhooshSearchIndex}


def mail(subject: str, body: str, extra_headers: str = "", ctype: str = "text/plain; charset=utf-8",
         encoding: str | None = None) -> bytes:
    cte = f"Content-Transfer-Encoding: {encoding}\r\n" if encoding else ""
    return (f"From: Carol <carol@example.test>\r\nTo: dave@example.test\r\nSubject: {subject}\r\n"
            f"{extra_headers}Content-Type: {ctype}\r\n{cte}\r\n{body}\r\n").encode()


@pytest.fixture(params=sorted(INDEXES))
def index(request, tmp_path):
    opened = INDEXES[request.param](str(tmp_path / "index"))
    yield opened
    opened.close()


@pytest.fixture
def core(metadata, blobs):
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    metadata.write_sync(lambda txn: txn.put(keys.account(ACCOUNT), b"\x80"))
    return core


@pytest.fixture
def indexer(core, index):
    # Batches run only when the test flushes, so "not indexed yet" is deterministic.
    service = SearchIndexer(core, index, batch_size=10_000, delay=3600)
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


def test_index_query_keeps_only_whole_words():
    assert index_query("hello") is None
    assert index_query("hello world") is None
    assert index_query("say hello world now").strip() == "hello world"
    assert index_query("東京") == "東京"
    assert index_query("x" * 9000) is None


@pytest_twisted.inlineCallbacks
def test_matching_is_exact_over_indexed_and_pending_messages(core, index, indexer):
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    append = lambda raw: core.append(ACCOUNT, inbox.id, raw)
    indexed = [
        (yield append(mail("Quarterly budget", "The budget for the quarter is attached."))),
        (yield append(mail("Lunch", "<p>Othello at <b>the</b> theatre</p>", ctype="text/html"))),
        (yield append(mail("Encoded", base64.encodebytes("Größe des Budgets: hoch".encode()).decode(),
                           encoding="base64"))),
        (yield append(mail("Words reversed", "quarter the for budget"))),
    ]
    yield indexer.flush()
    pending = [
        (yield append(mail("Late", "A late budget for the quarter arrived."))),
        (yield append(mail("Quoted", "caf=C3=A9 hello =\r\nworld", encoding="quoted-printable"))),
    ]
    assert indexer.pending(ACCOUNT) == {p.message for p in pending}
    search = MailSearch(core, index, indexer)
    everything = [r.message for r in indexed + pending]

    async def find(field, needle, ids=everything):
        return await search.matching(ACCOUNT, field, needle, ids)

    ids = {name: r.message for name, r in zip(("budget", "html", "b64", "reversed", "late", "qp"),
                                               indexed + pending)}
    # index path (interior whole words), including the not-yet-indexed message
    assert (yield ensureDeferred(find("body", "budget for the quarter"))) == {ids["budget"], ids["late"]}
    # scan path: a substring inside a word, case-insensitively
    assert (yield ensureDeferred(find("body", "ELL"))) == {ids["html"], ids["qp"]}
    # decoded text: HTML reduced to text, base64, quoted-printable soft breaks, UTF-8
    assert (yield ensureDeferred(find("body", "othello at the theatre"))) == {ids["html"]}
    assert (yield ensureDeferred(find("body", "GRÖSSE des"))) == {ids["b64"]}
    assert (yield ensureDeferred(find("body", "café hello world"))) == {ids["qp"]}
    # TEXT covers the header; BODY does not
    assert (yield ensureDeferred(find("text", "quarterly"))) == {ids["budget"]}
    assert (yield ensureDeferred(find("body", "quarterly"))) == set()
    # a single header field
    assert (yield ensureDeferred(find("subject", "reVERSED"))) == {ids["reversed"]}
    # restricted to the given messages; empty needle matches all of them
    assert (yield ensureDeferred(find("body", "budget", [ids["late"]]))) == {ids["late"]}
    assert (yield ensureDeferred(find("body", "", [ids["b64"], ids["qp"]]))) == {ids["b64"], ids["qp"]}
    with pytest.raises(ValueError):
        yield ensureDeferred(find("nonsense", "x"))


@pytest_twisted.inlineCallbacks
def test_index_candidates_are_really_used(core, index, indexer):
    """A message the index lost (and that is not pending) is found by scanning only."""
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    result = yield core.append(ACCOUNT, inbox.id, mail("s", "we say hello world now and then"))
    yield indexer.flush()
    search = MailSearch(core, index, indexer)
    found = yield ensureDeferred(search.matching(ACCOUNT, "body", "say hello world now", [result.message]))
    assert found == {result.message}
    yield deferToThread(lambda: (index.remove(ACCOUNT, [result.message]), index.commit()))
    found = yield ensureDeferred(search.matching(ACCOUNT, "body", "say hello world now", [result.message]))
    assert found == set()  # the index was asked, and it no longer knows the message
    found = yield ensureDeferred(search.matching(ACCOUNT, "body", "hello", [result.message]))
    assert found == set()  # one word is answered by the index alone: no scan of indexed messages


@pytest_twisted.inlineCallbacks
def test_imap_search_through_mail_search(core, index, indexer):
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    for n in range(6):
        body = "the project deadline is friday" if n % 2 else "nothing to see"
        yield core.append(ACCOUNT, inbox.id, mail(f"note {n}", body))
    yield indexer.flush()
    yield core.append(ACCOUNT, inbox.id, mail("note 6", "deadline moved: the project deadline is monday"))
    uids = core.mailbox_uids(ACCOUNT, inbox.id)
    yield core.store_flags(ACCOUNT, inbox.id, [uids[1][0]], FLAGS_ADD, ["\\Seen"])
    records = core.get_messages(ACCOUNT, [mid for _, mid in uids])
    messages = [SearchMessage(seq, uid, record) for seq, ((uid, _), record) in enumerate(zip(uids, records), 1)]
    context = SearchContext(messages, core.get_parsed, MailSearch(core, index, indexer).for_account(ACCOUNT),
                            run_blocking=deferToThread)

    async def run(*tokens):
        return await evaluate(parse_search(list(tokens)), context)

    assert (yield ensureDeferred(run("BODY", b"project deadline is"))) == [2, 4, 6, 7]
    assert (yield ensureDeferred(run("UNSEEN", "BODY", b"project deadline is"))) == [4, 6, 7]
    assert (yield ensureDeferred(run("NOT", "TEXT", b"DEADLINE"))) == [1, 3, 5]
    assert (yield ensureDeferred(run("OR", "SUBJECT", b"note 1", "BODY", b"monday"))) == [2, 7]


@pytest_twisted.inlineCallbacks
def test_one_word_is_answered_by_the_index_and_only_unindexed_messages_are_scanned(core, index, indexer, blobs):
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    hello = yield core.append(ACCOUNT, inbox.id, mail("greeting", "Hello world"))
    othello = yield core.append(ACCOUNT, inbox.id, mail("play", "Othello tonight"))
    other = yield core.append(ACCOUNT, inbox.id, mail("Quarterly", "nothing here"))
    yield indexer.flush()
    late = yield core.append(ACCOUNT, inbox.id, mail("late", "a late shellfish"))
    assert indexer.pending(ACCOUNT) == {late.message}
    # Take the bytes of the indexed messages away: a scan of them would now find nothing,
    # so what is found for them comes from the index alone.
    for result in (hello, othello, other):
        blobs.delete(core.get_message(ACCOUNT, result.message).blob_id)
    search = MailSearch(core, index, indexer)
    everything = [r.message for r in (hello, othello, other, late)]

    async def find(field, needle):
        return await search.matching(ACCOUNT, field, needle, everything)

    assert (yield ensureDeferred(find("body", "ELL"))) == {hello.message, othello.message, late.message}
    assert (yield ensureDeferred(find("body", "hello"))) == {hello.message, othello.message}
    assert (yield ensureDeferred(find("body", "shellfish"))) == {late.message}  # pending: scanned
    assert (yield ensureDeferred(find("text", "quarter"))) == {other.message}  # TEXT includes the header
    assert (yield ensureDeferred(find("body", "quarter"))) == set()
    assert (yield ensureDeferred(find("body", "zebra"))) == set()


@pytest_twisted.inlineCallbacks
def test_one_word_past_the_cut_of_a_long_word_is_still_found(core, index, indexer):
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    hidden = yield core.append(ACCOUNT, inbox.id, mail("long", "x" * 150 + "needle and more"))
    absent = yield core.append(ACCOUNT, inbox.id, mail("long too", "y" * 150 + "hay"))
    yield indexer.flush()
    search = MailSearch(core, index, indexer)
    found = yield ensureDeferred(search.matching(ACCOUNT, "body", "needle", [hidden.message, absent.message]))
    assert found == {hidden.message}


@pytest_twisted.inlineCallbacks
def test_a_message_indexed_during_a_search_is_not_lost(core, index, indexer):
    """The pending set is read before the index is asked: when the indexer's batch lands
    between the index's answer (without the message) and the end of the search, the
    message is still scanned, not lost between both."""
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    result = yield core.append(ACCOUNT, inbox.id, mail("s", "a racing word"))
    real_search_containing = index.search_containing

    def answer_then_index(*args):
        answer = real_search_containing(*args)  # the snapshot before the batch
        blockingCallFromThread(reactor, indexer.flush)  # the batch commits, pending empties
        return answer

    search = MailSearch(core, _Wrapped(index, search_containing=answer_then_index), indexer)
    assert indexer.pending(ACCOUNT) == {result.message}
    found = yield ensureDeferred(search.matching(ACCOUNT, "body", "racing", [result.message]))
    assert indexer.pending(ACCOUNT) == set()
    assert found == {result.message}


class _Wrapped:
    """An index with some methods replaced (the real index underneath)."""

    def __init__(self, index, **methods) -> None:
        self._index = index
        self.__dict__.update(methods)

    def __getattr__(self, name):
        return getattr(self._index, name)
