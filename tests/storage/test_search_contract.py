"""The one contract every ``ISearchIndex`` adapter passes.

A new adapter is one more entry in ``INDEX_FACTORIES``: a callable that opens the index
kept under a directory.  Nothing below may depend on which engine is underneath.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from zope.interface.verify import verifyObject

from mailserve.interfaces import SEARCH_FIELDS, ISearchIndex
from mailserve.storage.tantivy_index import TantivySearchIndex
from mailserve.storage.whoosh_index import WhooshSearchIndex

SOURCE_ROOT = Path(__file__).resolve().parents[2]

INDEX_FACTORIES = [
    pytest.param(WhooshSearchIndex, id="whoosh"),
    pytest.param(TantivySearchIndex, id="tantivy"),
]


@pytest.fixture(params=INDEX_FACTORIES)
def open_index(request, tmp_path):
    """Open (and later close) the index kept in one directory; callable more than once.

    ``opener.factory`` and ``opener.path`` let a test open the same index in a child process.
    """
    opened = []

    def opener():
        index = request.param(tmp_path / "index")
        opened.append(index)
        return index

    opener.factory = request.param
    opener.path = tmp_path / "index"
    yield opener
    for index in opened:
        index.close()


@pytest.fixture
def index(open_index):
    return open_index()


def message(account, number, **fields):
    return {"account": account, "message": number, **fields}


def indexed(index, *documents):
    index.add(list(documents))
    index.commit()
    return index


class TestInterface:
    def test_provides_the_interface(self, index):
        assert verifyObject(ISearchIndex, index)

    def test_empty_index_finds_nothing(self, index):
        assert index.search(1, "body", "anything") == set()
        assert index.search(1, "text", "") == set()


class TestVisibility:
    def test_added_message_is_found_after_commit(self, index):
        indexed(
            index, message(1, 10, subject="Quarterly report", body="Numbers attached.")
        )
        assert index.search(1, "subject", "quarterly") == {10}
        assert index.search(1, "body", "numbers") == {10}

    def test_nothing_is_visible_before_commit(self, index):
        indexed(index, message(1, 1, body="committed words"))
        index.add([message(1, 2, body="pending words")])
        index.remove(1, [1])
        assert index.search(1, "body", "words") == {1}
        assert index.search(1, "body", "pending") == set()
        index.commit()
        assert index.search(1, "body", "words") == {2}

    def test_results_are_plain_int_message_ids(self, index):
        indexed(
            index,
            message(1, 2**40, body="big id"),
            message(2**63 - 1, 7, body="big account"),
        )
        found = index.search(1, "body", "big")
        assert found == {2**40}
        assert all(type(number) is int for number in found)
        assert index.search(2**63 - 1, "body", "account") == {7}

    def test_commit_without_changes_is_harmless(self, index):
        index.commit()
        indexed(index, message(1, 1, body="hello"))
        index.commit()
        assert index.search(1, "body", "hello") == {1}


class TestReplaceAndRemove:
    def test_adding_again_replaces_the_message(self, index):
        indexed(index, message(1, 5, subject="old subject", body="old body"))
        indexed(index, message(1, 5, subject="new subject"))
        assert index.search(1, "subject", "subject") == {5}
        assert index.search(1, "subject", "old") == set()
        assert index.search(1, "body", "old") == set()
        assert index.search(1, "subject", "new") == {5}

    def test_last_version_wins_within_one_commit(self, index):
        index.add([message(1, 5, body="first"), message(1, 5, body="second")])
        index.add([message(1, 5, body="third")])
        index.commit()
        assert index.search(1, "body", "first") == set()
        assert index.search(1, "body", "second") == set()
        assert index.search(1, "body", "third") == {5}

    def test_remove_deletes_only_the_given_messages(self, index):
        indexed(index, *(message(1, number, body="common") for number in range(1, 6)))
        index.remove(1, [2, 4])
        index.commit()
        assert index.search(1, "body", "common") == {1, 3, 5}

    def test_removing_unknown_messages_is_harmless(self, index):
        indexed(index, message(1, 1, body="kept"))
        index.remove(1, [99, 100])
        index.remove(7, [1])
        index.commit()
        assert index.search(1, "body", "kept") == {1}

    def test_add_then_remove_in_one_commit_removes(self, index):
        indexed(index, message(1, 1, body="old"))
        index.add([message(1, 1, body="new"), message(1, 2, body="new")])
        index.remove(1, [1, 2])
        index.commit()
        assert index.search(1, "text", "") == set()

    def test_remove_then_add_in_one_commit_keeps_the_new_version(self, index):
        indexed(index, message(1, 1, body="old"))
        index.remove(1, [1])
        index.add([message(1, 1, body="new")])
        index.commit()
        assert index.search(1, "body", "new") == {1}
        assert index.search(1, "body", "old") == set()


class TestFields:
    @pytest.mark.parametrize("field", SEARCH_FIELDS)
    def test_each_field_is_searched_on_its_own(self, index, field):
        indexed(
            index,
            message(1, 1, **{field: "needle"}),
            message(
                1, 2, **{other: "needle" for other in SEARCH_FIELDS if other != field}
            ),
        )
        assert index.search(1, field, "needle") == {1}
        assert index.search(1, "text", "needle") == {1, 2}

    def test_text_matches_words_spread_over_fields(self, index):
        indexed(
            index,
            message(
                1, 1, **{"from": "Alice <alice@example.com>", "subject": "Invoice 42"}
            ),
        )
        assert index.search(1, "text", "alice invoice") == {1}
        assert index.search(1, "subject", "alice invoice") == set()
        assert index.search(1, "from", "alice invoice") == set()

    def test_every_word_must_match(self, index):
        indexed(index, message(1, 1, body="red green"), message(1, 2, body="red blue"))
        assert index.search(1, "body", "red") == {1, 2}
        assert index.search(1, "body", "red green") == {1}
        assert index.search(1, "body", "green blue") == set()

    def test_missing_and_empty_fields_are_allowed(self, index):
        indexed(index, message(1, 1, subject="", body=None, to="bob@example.org"))
        assert index.search(1, "to", "bob") == {1}
        assert index.search(1, "subject", "bob") == set()

    def test_unknown_field_is_refused(self, index):
        with pytest.raises(ValueError, match="field"):
            index.search(1, "subjekt", "hello")


class TestWords:
    def test_case_insensitive_and_split_on_punctuation(self, index):
        indexed(
            index,
            message(
                1,
                1,
                subject="Re: [Project-X] QUARTERLY_report (v2.1)",
                to="Bob.Smith@Example.COM",
            ),
        )
        for text in ("project x", "PROJECT", "quarterly", "Report", "v2", "1"):
            assert index.search(1, "subject", text) == {1}, text
        assert index.search(1, "to", "bob smith example com") == {1}
        assert index.search(1, "to", "bob.smith@example.com") == {1}
        assert index.search(1, "subject", "projectx") == set()

    def test_words_match_whole_words_only(self, index):
        indexed(index, message(1, 1, body="unbelievable"))
        assert index.search(1, "body", "believe") == set()
        assert index.search(1, "body", "UNBELIEVABLE") == {1}

    def test_long_words_still_find_themselves(self, index):
        long_word = "x" * 150 + "tail"
        indexed(index, message(1, 1, body=f"start {long_word} end"))
        assert index.search(1, "body", long_word) == {1}
        assert index.search(1, "body", long_word.upper()) == {1}


class TestUnicode:
    def test_accents_fold_case_but_are_kept(self, index):
        indexed(
            index, message(1, 1, subject="Café Crème"), message(1, 2, subject="cafe")
        )
        assert index.search(1, "subject", "CAFÉ") == {1}
        assert index.search(1, "subject", "crème café") == {1}
        assert index.search(1, "subject", "cafe") == {2}

    def test_decomposed_and_composed_accents_are_the_same_word(self, index):
        indexed(index, message(1, 1, body="cafe\u0301 ouvert"))
        assert index.search(1, "body", "café") == {1}

    def test_sharp_s_matches_ss(self, index):
        indexed(index, message(1, 1, body="Die Straße ist groß"))
        assert index.search(1, "body", "STRASSE") == {1}
        assert index.search(1, "body", "straße") == {1}
        assert index.search(1, "body", "gross") == {1}

    def test_full_width_letters_match_ascii(self, index):
        indexed(index, message(1, 1, subject="Ｔｏｋｙｏ meeting"))
        assert index.search(1, "subject", "tokyo") == {1}

    def test_cjk_substrings_are_found(self, index):
        indexed(
            index,
            message(1, 1, body="私は東京都に住んでいます"),
            message(1, 2, body="京都へ行きます"),
            message(1, 3, body="서울에서 만나요"),
        )
        assert index.search(1, "body", "東京") == {1}
        assert index.search(1, "body", "京都") == {1, 2}
        assert index.search(1, "body", "東京都") == {1}
        assert index.search(1, "body", "住んで") == {1}
        assert index.search(1, "body", "京") == {1, 2}
        assert index.search(1, "body", "大阪") == set()
        assert index.search(1, "body", "서울") == {3}

    def test_scripts_with_combining_marks_keep_whole_words(self, index):
        indexed(
            index, message(1, 1, body="नमस्ते दुनिया"), message(1, 2, body="Привет мир")
        )
        assert index.search(1, "body", "नमस्ते") == {1}
        assert index.search(1, "body", "ПРИВЕТ") == {2}

    def test_mixed_scripts_split_into_words(self, index):
        indexed(index, message(1, 1, subject="Tokyo東京2024年"))
        assert index.search(1, "subject", "tokyo") == {1}
        assert index.search(1, "subject", "東京") == {1}
        assert index.search(1, "subject", "2024") == {1}


class TestAccountIsolation:
    def test_searches_never_cross_accounts(self, index):
        indexed(
            index,
            message(1, 1, body="shared secret"),
            message(2, 1, body="shared other"),
            message(2, 2, body="secret"),
        )
        assert index.search(1, "body", "shared") == {1}
        assert index.search(1, "body", "secret") == {1}
        assert index.search(2, "body", "secret") == {2}
        assert index.search(2, "text", "shared") == {1}
        assert index.search(3, "body", "shared") == set()
        assert index.search(1, "text", "*") == {1}

    def test_same_message_id_in_two_accounts_is_two_messages(self, index):
        indexed(index, message(1, 7, body="alpha"), message(2, 7, body="beta"))
        indexed(index, message(1, 7, body="gamma"))
        index.remove(2, [7])
        index.commit()
        assert index.search(1, "body", "gamma") == {7}
        assert index.search(2, "body", "beta") == set()
        assert index.search(2, "text", "") == set()


HOSTILE_QUERIES = [
    "OR",
    "AND",
    "NOT",
    '"',
    "'",
    "*",
    "?",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    "\\",
    "/",
    "-",
    "+",
    "~",
    "^",
    "!",
    "&&",
    "||",
    "field:x",
    "subject:hello",
    "body:*",
    "a AND (b",
    '"unterminated',
    "hello~2",
    "hel*",
    "[a TO z]",
    "+must -mustnot",
    "\x00",
    "\ud83d\ude00",
    "🙂",
    "%s%n",
    "${x}",
    "' OR 1=1 --",
]


class TestHostileQueries:
    @pytest.mark.parametrize("text", HOSTILE_QUERIES)
    @pytest.mark.parametrize("field", ["subject", "text"])
    def test_query_syntax_is_literal_text(self, index, field, text):
        indexed(
            index,
            message(1, 1, subject="to be or not to be"),
            message(1, 2, subject="field x and subject hello"),
            message(1, 3, subject="a and b must mustnot"),
            message(2, 4, subject="or and not field x"),
        )
        found = index.search(1, field, text)
        assert found <= {1, 2, 3}

    def test_operators_are_words(self, index):
        indexed(
            index,
            message(1, 1, subject="to be or not to be"),
            message(1, 2, subject="hello world"),
        )
        assert index.search(1, "subject", "OR") == {1}
        assert index.search(1, "subject", "NOT") == {1}
        assert index.search(1, "subject", "hello OR world") == set()
        assert index.search(1, "subject", "hello AND world") == set()
        assert index.search(1, "subject", "-hello") == {2}
        assert index.search(1, "subject", "hel*") == set()

    def test_field_prefixes_are_words(self, index):
        indexed(
            index, message(1, 1, body="the field x is here"), message(1, 2, subject="x")
        )
        assert index.search(1, "body", "field:x") == {1}
        assert index.search(1, "body", "subject:x") == set()

    def test_text_without_words_matches_every_message_of_the_account(self, index):
        indexed(
            index,
            message(1, 1, body="one"),
            message(1, 2, subject="two"),
            message(2, 3, body="three"),
        )
        for text in ("", "*", '"', "(", "  ", "-- !!"):
            assert index.search(1, "body", text) == {1, 2}, text

    def test_too_long_query_is_refused(self, index):
        with pytest.raises(ValueError, match="long"):
            index.search(1, "body", "a" * 100_000)

    def test_too_many_words_are_refused(self, index):
        with pytest.raises(ValueError, match="words"):
            index.search(1, "body", " ".join(f"w{number}" for number in range(1000)))

    def test_repeated_words_count_once(self, index):
        indexed(index, message(1, 1, body="spam"))
        assert index.search(1, "body", " ".join(["spam"] * 1000)) == {1}

    def test_non_string_query_is_refused(self, index):
        with pytest.raises(TypeError):
            index.search(1, "body", b"bytes")


class TestBadInput:
    @pytest.mark.parametrize(
        "document, error",
        [
            ({"message": 1, "body": "x"}, ValueError),
            ({"account": 1, "body": "x"}, ValueError),
            ({"account": "1", "message": 1}, TypeError),
            ({"account": 1, "message": 1.0}, TypeError),
            ({"account": True, "message": 1}, TypeError),
            ({"account": -1, "message": 1}, ValueError),
            ({"account": 1, "message": 2**63}, ValueError),
            ({"account": 1, "message": 1, "body": b"bytes"}, TypeError),
            ({"account": 1, "message": 1, "bodyy": "x"}, ValueError),
            ("not a document", TypeError),
        ],
    )
    def test_bad_batch_is_refused_whole(self, index, document, error):
        with pytest.raises(error):
            index.add([message(1, 50, body="valid"), document])
        index.commit()
        assert index.search(1, "body", "valid") == set()

    def test_batch_must_be_a_list_of_documents(self, index):
        with pytest.raises(TypeError):
            index.add(message(1, 1, body="x"))

    @pytest.mark.parametrize(
        "account, messages", [(-1, [1]), (1, [-1]), ("1", [1]), (1, ["1"])]
    )
    def test_bad_remove_is_refused(self, index, account, messages):
        with pytest.raises((TypeError, ValueError)):
            index.remove(account, messages)

    def test_bad_search_account_is_refused(self, index):
        with pytest.raises(TypeError):
            index.search("1", "body", "x")
        with pytest.raises(ValueError):
            index.search(-1, "body", "x")


class TestLifecycle:
    def test_reopening_keeps_committed_data(self, open_index):
        index = open_index()
        indexed(
            index, message(1, 1, subject="durable"), message(2, 2, subject="durable")
        )
        index.remove(2, [2])
        index.commit()
        index.add([message(1, 3, subject="durable but never committed")])
        index.close()

        reopened = open_index()
        assert reopened.search(1, "subject", "durable") == {1}
        assert reopened.search(2, "subject", "durable") == set()
        indexed(reopened, message(1, 4, subject="durable again"))
        assert reopened.search(1, "subject", "durable") == {1, 4}

    def test_process_killed_without_close_keeps_commits_only(self, open_index):
        """A crash loses nothing committed and leaves the index usable (and unlocked)."""
        factory = open_index.factory
        script = textwrap.dedent(
            f"""
            import os
            from {factory.__module__} import {factory.__qualname__} as Index

            index = Index({str(open_index.path)!r})
            index.add([{{"account": 1, "message": 1, "body": "committed before the crash"}}])
            index.commit()
            index.add([{{"account": 1, "message": 2, "body": "pending at the crash"}}])
            index.remove(1, [1])
            os._exit(0)
            """
        )
        child = subprocess.run(
            [sys.executable, "-c", script],
            cwd=SOURCE_ROOT,
            check=False,
            capture_output=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr.decode()

        index = open_index()
        assert index.search(1, "body", "committed") == {1}
        assert index.search(1, "body", "pending") == set()
        indexed(index, message(1, 3, body="after the crash"))
        assert index.search(1, "body", "crash") == {1, 3}

    def test_closed_index_refuses_work(self, index):
        index.close()
        index.close()
        with pytest.raises(RuntimeError):
            index.search(1, "body", "x")
        with pytest.raises(RuntimeError):
            index.add([message(1, 1, body="x")])
        with pytest.raises(RuntimeError):
            index.commit()

    def test_batch_of_a_thousand(self, index):
        documents = [
            message(
                number % 3,
                number,
                **{"from": f"sender{number}@example.com"},
                subject=f"batch item {number}",
                body=f"common body text unique{number} " * 20,
            )
            for number in range(1000)
        ]
        indexed(index, *documents)
        per_account = {
            account: {n for n in range(1000) if n % 3 == account}
            for account in range(3)
        }
        for account, numbers in per_account.items():
            assert index.search(account, "body", "common") == numbers
            assert index.search(account, "subject", "batch item") == numbers
        for number in range(0, 1000, 7):
            assert index.search(number % 3, "text", f"unique{number}") == {number}
            assert index.search(number % 3, "from", f"sender{number}") == {number}
            assert index.search((number + 1) % 3, "text", f"unique{number}") == set()


class TestConcurrency:
    """The indexer writes on a worker thread while the reactor thread searches."""

    @pytest_twisted.ensureDeferred
    async def test_searches_on_the_reactor_thread_during_commits(self, index):
        batches, batch_size = 20, 50
        indexed(index, message(1, 0, body="sentinel generation0"))
        reactor_thread = threading.get_ident()
        writer_threads = set()

        def write_batches():
            writer_threads.add(threading.get_ident())
            for batch in range(1, batches + 1):
                first = batch * batch_size
                index.add(
                    [
                        message(1, number, body=f"common batch{batch}")
                        for number in range(first, first + batch_size)
                    ]
                    + [message(1, 0, body=f"sentinel generation{batch}")]
                )
                index.commit()

        writing = deferToThread(write_batches)
        seen_counts = []
        while not writing.called:
            common = index.search(1, "body", "common")
            seen_counts.append(len(common))
            # A replaced message is never missing nor found twice, whatever the timing.
            assert index.search(1, "body", "sentinel") == {0}
            await deferLater(reactor, 0.001, lambda: None)
        await writing

        assert writer_threads and reactor_thread not in writer_threads
        assert seen_counts, "the reactor thread never searched while the worker wrote"
        assert all(count % batch_size == 0 for count in seen_counts), (
            "a search saw half a commit"
        )
        assert seen_counts == sorted(seen_counts), "a search went back in time"
        assert len(index.search(1, "body", "common")) == batches * batch_size
        assert index.search(1, "body", f"generation{batches}") == {0}
        assert index.search(1, "body", "generation0") == set()

    def test_searches_on_one_thread_while_another_writes(self, index):
        stop = threading.Event()

        def search_until_stopped():
            wrong = []
            while not stop.is_set():
                found = index.search(1, "text", "steady")
                if found != {1}:
                    wrong.append(found)
                # Yield the GIL between searches: with a pure-Python index (Whoosh) a spinning
                # reader can otherwise starve the writer for minutes on a busy machine.
                time.sleep(0.002)
            return wrong

        indexed(index, message(1, 1, body="steady"))
        with ThreadPoolExecutor(max_workers=1) as pool:
            searching = pool.submit(search_until_stopped)
            try:
                for batch in range(10):
                    index.add(
                        [
                            message(1, 1000 + batch * 100 + n, body=f"churn {n}")
                            for n in range(100)
                        ]
                    )
                    index.remove(
                        1, [1000 + (batch - 1) * 100 + n for n in range(0, 100, 2)]
                    )
                    index.add([message(1, 1, body="steady again")])
                    index.commit()
            finally:
                stop.set()
            # Re-raises anything the searching thread raised.
            assert searching.result() == []
        assert len(index.search(1, "body", "churn")) == 10 * 100 - 9 * 50


class TestSubstringOfOneWord:
    """``search_containing``: IMAP substring search of one word from the term dictionary."""

    def test_finds_words_containing_the_needle_anywhere(self, index):
        indexed(
            index,
            message(1, 1, body="Hello there"),
            message(1, 2, body="Othello at the theatre"),
            message(1, 3, body="nothing matching"),
            message(2, 4, body="hello from another account"),
        )
        assert index.search_containing(1, ["body"], "ELL") == ({1, 2}, set())
        assert index.search_containing(1, ["body"], "hello") == ({1, 2}, set())
        assert index.search_containing(1, ["body"], "thell") == ({2}, set())
        assert index.search_containing(1, ["body"], "zebra") == (set(), set())

    def test_searches_only_the_given_fields(self, index):
        indexed(index, message(1, 1, subject="budget", body="none"), message(1, 2, headers="x-budget: 1"))
        assert index.search_containing(1, ["body"], "budge") == (set(), set())
        assert index.search_containing(1, ["headers", "body"], "budge") == ({2}, set())
        assert index.search_containing(1, ["subject"], "budge") == ({1}, set())

    def test_unicode_is_folded_like_the_text(self, index):
        indexed(index, message(1, 1, body="Die GRÖSSE der Straße"), message(1, 2, body="café au lait"))
        assert index.search_containing(1, ["body"], "röss") == ({1}, set())
        assert index.search_containing(1, ["body"], "STRASS") == ({1}, set())
        assert index.search_containing(1, ["body"], "afé") == ({2}, set())
        assert index.search_containing(1, ["body"], "afe") == (set(), set())

    def test_messages_with_cut_words_are_reported_uncertain(self, index):
        long_word = "x" * 150 + "needle"
        indexed(index, message(1, 1, body=f"short words and {long_word}"), message(1, 2, body="xxx needle"))
        found, uncertain = index.search_containing(1, ["body"], "needle")
        assert found == {2}
        assert uncertain == {1}  # "needle" sits past the cut: only a scan can tell

    def test_query_syntax_is_plain_text_and_bad_input_refused(self, index):
        indexed(index, message(1, 1, body="a.*b"))
        with pytest.raises(ValueError):
            index.search_containing(1, ["body"], ".*")
        with pytest.raises(ValueError):
            index.search_containing(1, ["body"], "two words")
        with pytest.raises(ValueError):
            index.search_containing(1, ["body"], "y" * 101)
        with pytest.raises(ValueError):
            index.search_containing(1, ["nonsense"], "word")
        with pytest.raises(ValueError):
            index.search_containing(1, "body", "word")
