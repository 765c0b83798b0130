"""The full-text index on tantivy (a Rust search library, through its Python binding).

Text is analysed into terms by the word rules in ``mailserve.storage.search_terms`` (the
one place they are written down, so every adapter matches the same messages); tantivy
only sees ready-made terms, separated by spaces, and indexes them with its ``whitespace``
tokenizer.  Queries are built from term queries, never parsed, so query syntax in user
input is plain text.

Concurrency: tantivy's writer applies deletes and adds in order, including to documents
still in its buffer, so ``add`` and ``remove`` go straight to the writer (in the calling
thread, the indexer's worker) and ``commit`` publishes them.  Searches use the reader's
snapshot of the last commit: they may run on any thread, at the same time as a commit,
and tantivy releases the GIL while it searches and commits, so a commit in the worker
does not hold up the reactor thread.
"""

from __future__ import annotations

import os
import threading

import tantivy
from twisted.logger import Logger
from zope.interface import implementer

from mailserve.interfaces import SEARCH_FIELDS, ISearchIndex
from mailserve.storage.search_terms import (
    ALL_FIELDS,
    LONG_WORD_MARKER,
    SearchIndexClosed,
    SearchIndexLocked,
    analyse_documents,
    check_id,
    check_search_field,
    check_substring_request,
    document_key,
    query_terms,
)

__all__ = ["SearchIndexClosed", "SearchIndexLocked", "TantivySearchIndex"]


def _schema() -> tantivy.Schema:
    """Key, account and message id, and one field of ready-made terms per search field.

    ``index_option="basic"`` records only which documents hold a term: we never rank,
    so frequencies and positions would only cost space and time.  ``message`` is a fast
    (columnar) field so that result ids are read in one batch instead of loading stored
    documents.
    """
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("key", tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("account", indexed=True)
    builder.add_unsigned_field("message", fast=True)
    for field in SEARCH_FIELDS:
        builder.add_text_field(field, tokenizer_name="whitespace", index_option="basic")
    return builder.build()


@implementer(ISearchIndex)
class TantivySearchIndex:
    """``ISearchIndex`` on a tantivy index in the directory ``path``.

    The instance holds tantivy's writer (and with it the directory's write lock) from
    open to close; a second instance on the same directory fails with
    ``SearchIndexLocked``.  ``writer_threads`` and ``writer_memory_mb`` size the writer:
    tantivy needs at least 15 MB per indexing thread.
    """

    log = Logger()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writer_threads: int = 1,
        writer_memory_mb: int = 64,
    ) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._schema = _schema()
        try:
            self._index = tantivy.Index(self._schema, path=self.path, reuse=True)
        except ValueError as error:
            raise ValueError(f"search index {self.path} cannot be opened ({error}); rebuild it") from error
        # Searches see exactly what has been committed: the reader is reloaded by commit.
        self._index.config_reader(reload_policy="manual")
        try:
            self._writer = self._index.writer(heap_size=writer_memory_mb * 1_000_000, num_threads=writer_threads)
        except ValueError as error:
            if "lock" in str(error).lower():
                raise SearchIndexLocked(f"search index {self.path} is already open elsewhere") from error
            raise
        self._writer_lock = threading.Lock()
        self._uncommitted = False
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise SearchIndexClosed(f"search index {self.path} is closed")

    def add(self, documents: list) -> None:
        """Hand ``documents`` to the writer, each replacing its earlier version."""
        self._check_open()
        analysed = analyse_documents(documents)
        with self._writer_lock:
            self._check_open()
            for document in analysed:
                engine_document = tantivy.Document()
                engine_document.add_text("key", document.key)
                engine_document.add_unsigned("account", document.account)
                engine_document.add_unsigned("message", document.message)
                for field, terms in document.terms.items():
                    engine_document.add_text(field, terms)
                self._writer.delete_documents_by_term("key", document.key)
                self._writer.add_document(engine_document)
                self._uncommitted = True

    def remove(self, account: int, messages: list) -> None:
        """Delete the given messages of ``account`` (from the next commit on)."""
        self._check_open()
        check_id(account, "account")
        keys = [document_key(account, check_id(message, "message")) for message in messages]
        with self._writer_lock:
            self._check_open()
            for key in keys:
                self._writer.delete_documents_by_term("key", key)
                self._uncommitted = True

    def commit(self) -> None:
        """Make every add and remove so far durable (tantivy syncs its files) and visible."""
        self._check_open()
        with self._writer_lock:
            self._check_open()
            if not self._uncommitted:
                return
            opstamp = self._writer.commit()
            self._uncommitted = False
            self._index.reload()
            self.log.debug("Search index {path}: committed up to operation {opstamp}", path=self.path, opstamp=opstamp)

    def search(self, account: int, field: str, text: str) -> set:
        """Ids of the messages of ``account`` whose ``field`` holds every word of ``text``."""
        self._check_open()
        check_id(account, "account")
        check_search_field(field)
        fields_searched = SEARCH_FIELDS if field == ALL_FIELDS else (field,)
        must = tantivy.Occur.Must
        clauses = [(must, tantivy.Query.term_query(self._schema, "account", account))]
        for term in query_terms(text):
            alternatives = [tantivy.Query.term_query(self._schema, name, term) for name in fields_searched]
            if len(alternatives) == 1:
                clauses.append((must, alternatives[0]))
            else:
                should = tantivy.Occur.Should
                clauses.append(
                    (
                        must,
                        tantivy.Query.boolean_query([(should, query) for query in alternatives]),
                    )
                )
        return self._messages(tantivy.Query.boolean_query(clauses))

    def _messages(self, query: tantivy.Query) -> set:
        """The message ids ``query`` matches.

        Count first (cheap), then collect exactly that many hits, ordered by the fast field
        so that tantivy hands the message ids back without scoring anything.
        """
        searcher = self._index.searcher()
        count = searcher.search(query, limit=1, count=True).count
        if not count:
            return set()
        hits = searcher.search(query, limit=count, count=False, order_by_field="message").hits
        return {message for message, _address in hits}

    def search_containing(self, account: int, fields, word: str) -> tuple[set, set]:
        """``(found, uncertain)`` for a substring search of one word (``substring_word``).

        ``found``: messages of ``account`` with a term in one of ``fields`` containing
        ``word`` -- each of them contains it.  ``uncertain``: messages of which a field
        had a word cut to ``MAX_WORD_CHARS`` (``LONG_WORD_MARKER``): the word may hide
        past the cut, so the caller verifies those.  Every other indexed message does not
        contain ``word``.  The term dictionary is walked by tantivy's regex automaton (in
        Rust, GIL released), never the documents.
        """
        self._check_open()
        fields, folded = check_substring_request(account, fields, word)
        # Letters, digits and marks are never regex syntax, so the word needs no escaping.
        pattern = ".*" + folded + ".*"
        must, should = tantivy.Occur.Must, tantivy.Occur.Should
        account_query = tantivy.Query.term_query(self._schema, "account", account)

        def matching(per_field) -> set:
            alternatives = [(should, per_field(name)) for name in fields]
            return self._messages(tantivy.Query.boolean_query(
                [(must, account_query), (must, tantivy.Query.boolean_query(alternatives))]))

        found = matching(lambda name: tantivy.Query.regex_query(self._schema, name, pattern))
        uncertain = matching(lambda name: tantivy.Query.term_query(self._schema, name, LONG_WORD_MARKER))
        return found, uncertain - found

    def close(self) -> None:
        """Release the index and its write lock; changes not yet committed are discarded."""
        with self._writer_lock:
            if self._closed:
                return
            self._closed = True
            if self._uncommitted:
                self._writer.rollback()
            # Waits for background merges, then drops the writer and its lock file.
            self._writer.wait_merging_threads()
