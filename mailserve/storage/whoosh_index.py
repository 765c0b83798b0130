"""The full-text index on Whoosh.

Text is analysed into terms by ``mailserve.storage.search_terms`` (shared by every adapter),
so Whoosh only sees ready-made terms separated by spaces.

Concurrency
-----------
One thread (the ``SearchIndexer``'s worker) calls ``add``, ``remove`` and ``commit``;
searches come from another (the reactor thread).  ``search`` always uses the snapshot of
the last commit and never waits for a commit to finish, only for the instant in which
``commit`` swaps in the new snapshot.
"""

from __future__ import annotations

import os
import threading

from twisted.logger import Logger
from whoosh import fields, formats
from whoosh import index as whoosh_index
from whoosh.filedb.filestore import FileStorage
from whoosh.query import And, Or, Query, Term
from zope.interface import implementer

from mailserve.interfaces import SEARCH_FIELDS, ISearchIndex
from mailserve.storage.search_terms import (
    ALL_FIELDS,
    LONG_WORD_MARKER,
    AnalysedDocument,
    SearchIndexClosed,
    SearchIndexLocked,
    analyse_documents,
    check_id,
    check_search_field,
    check_substring_request,
    document_key,
    query_terms,
)


class _DurableFileStorage(FileStorage):
    """A Whoosh ``FileStorage`` whose files reach the disk before the index points at them.

    Whoosh writes segment files, then a new table of contents under a temporary name,
    then renames it into place, but never calls ``fsync``.  Syncing every file on close
    and the directory after each rename makes ``commit`` durable: after a crash the
    index is the last committed generation, not a table of contents naming lost data.
    """

    def create_file(self, name, excl=False, mode="wb", **kwargs):
        structfile = super().create_file(name, excl=excl, mode=mode, **kwargs)
        previous_onclose = structfile.onclose

        def sync_on_close(closing) -> None:
            if previous_onclose is not None:
                previous_onclose(closing)
            closing.file.flush()
            os.fsync(closing.file.fileno())

        structfile.onclose = sync_on_close
        return structfile

    def rename_file(self, oldname, newname, safe=False):
        super().rename_file(oldname, newname, safe=safe)
        self.sync_directory()

    def sync_directory(self) -> None:
        """Make renames and deletions in the index directory durable."""
        descriptor = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _terms_field() -> fields.FieldType:
    """A field of ready-made terms that records only which documents hold each term.

    Built from Whoosh's own classes (the schema is pickled into the index, so it must
    not name a class of ours), with the ``Existence`` format: we never rank, so term
    frequencies and positions would only cost space and time.
    """
    field = fields.KEYWORD(lowercase=False, commas=False, scorable=True, stored=False)
    field.format = formats.Existence()
    return field


def _schema() -> fields.Schema:
    return fields.Schema(
        key=fields.ID(unique=True),
        account=fields.ID(),
        message=fields.NUMERIC(numtype=int, bits=64, signed=False, sortable=True),
        **{field: _terms_field() for field in SEARCH_FIELDS},
    )


@implementer(ISearchIndex)
class WhooshSearchIndex:
    """``ISearchIndex`` on a Whoosh index in the directory ``path``.

    Whoosh cannot replace a document that is still being written, so ``add`` and
    ``remove`` only record what is to change, and ``commit`` applies the whole batch
    with one writer: it deletes every affected message, adds the new versions and
    publishes the new generation.  The instance holds Whoosh's write lock from open to
    close, so a second instance on the same directory fails with ``SearchIndexLocked``
    instead of corrupting the index.
    """

    log = Logger()

    def __init__(self, path: str | os.PathLike[str], *, writer_memory_mb: int = 128) -> None:
        self.path = os.fspath(path)
        self._writer_memory_mb = writer_memory_mb
        os.makedirs(self.path, exist_ok=True)
        self._storage = _DurableFileStorage(self.path)
        self._write_lock = self._storage.lock(f"{whoosh_index._DEF_INDEX_NAME}_WRITELOCK")
        if not self._write_lock.acquire(blocking=False):
            raise SearchIndexLocked(f"search index {self.path} is already open elsewhere")
        try:
            if whoosh_index.exists(self._storage):
                self._index = self._storage.open_index()
                expected = set(_schema().names())
                if set(self._index.schema.names()) != expected:
                    raise ValueError(f"search index {self.path} has an unknown layout; rebuild it")
            else:
                self._index = self._storage.create_index(_schema())
            self._searcher, self._message_ids = self._open_snapshot()
        except BaseException:
            self._write_lock.release()
            raise
        # Messages to re-index (an AnalysedDocument) or drop (None) at the next commit.
        self._pending: dict[str, AnalysedDocument | None] = {}
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._searcher_lock = threading.Lock()
        self._closed = False

    def _open_snapshot(self):
        """A searcher on the last committed generation and its docnum -> message id column."""
        searcher = self._index.searcher()
        if searcher.reader().doc_count_all() == 0:
            return searcher, {}  # Whoosh has no columns before the first document.
        return searcher, searcher.reader().column_reader("message")

    def _check_open(self) -> None:
        if self._closed:
            raise SearchIndexClosed(f"search index {self.path} is closed")

    def add(self, documents: list) -> None:
        """Record ``documents`` to be (re-)indexed by the next ``commit``."""
        self._check_open()
        analysed = analyse_documents(documents)
        with self._pending_lock:
            for document in analysed:
                self._pending[document.key] = document

    def remove(self, account: int, messages: list) -> None:
        """Record the given messages of ``account`` to be dropped by the next ``commit``."""
        self._check_open()
        check_id(account, "account")
        keys = [document_key(account, check_id(message, "message")) for message in messages]
        with self._pending_lock:
            for key in keys:
                self._pending[key] = None

    def commit(self) -> None:
        """Write every recorded change as one new index generation, durably, then show it.

        Blocks for as long as Whoosh takes to write (and merge) segments: call it off
        the reactor thread.  On failure nothing is published and the changes stay
        recorded, so a later ``commit`` retries them.
        """
        self._check_open()
        with self._commit_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            try:
                self._write(pending)
            except BaseException:
                with self._pending_lock:
                    pending.update(self._pending)
                    self._pending = pending
                raise
            searcher, message_ids = self._open_snapshot()
            self.log.debug("Search index {path}: committed {changes} changes", path=self.path, changes=len(pending))
            with self._searcher_lock:
                previous, self._searcher, self._message_ids = (
                    self._searcher,
                    searcher,
                    message_ids,
                )
                previous.close()

    def _write(self, pending: dict[str, AnalysedDocument | None]) -> None:
        writer = self._index.writer(_lk=False, limitmb=self._writer_memory_mb)
        try:
            with writer.searcher() as committed:
                for key in pending:
                    for docnum in committed.docs_for_query(Term("key", key), for_deletion=True):
                        writer.delete_document(docnum)
            for document in pending.values():
                if document is not None:
                    writer.add_document(
                        key=document.key,
                        account=str(document.account),
                        message=document.message,
                        **document.terms,
                    )
            writer.commit()
        except BaseException:
            if not writer.is_closed:
                writer.cancel()
            raise
        self._storage.sync_directory()

    def search(self, account: int, field: str, text: str) -> set:
        """Ids of the messages of ``account`` whose ``field`` holds every word of ``text``."""
        self._check_open()
        check_id(account, "account")
        check_search_field(field)
        fields_searched = SEARCH_FIELDS if field == ALL_FIELDS else (field,)
        clauses: list[Query] = [Term("account", str(account))]
        for term in query_terms(text):
            alternatives = [Term(name, term) for name in fields_searched]
            clauses.append(alternatives[0] if len(alternatives) == 1 else Or(alternatives))
        query = And(clauses)
        with self._searcher_lock:
            self._check_open()
            message_ids = self._message_ids
            return {message_ids[docnum] for docnum in self._searcher.docs_for_query(query)}

    def search_containing(self, account: int, fields, word: str) -> tuple[set, set]:
        """``(found, uncertain)`` for a substring search of one word; see
        ``TantivySearchIndex.search_containing``.  Whoosh has no term automaton, so the
        terms of each field are walked here, in Python."""
        self._check_open()
        fields, folded = check_substring_request(account, fields, word)
        needle = folded.encode("utf-8")
        marker = LONG_WORD_MARKER.encode("utf-8")
        with self._searcher_lock:
            self._check_open()
            searcher, message_ids = self._searcher, self._message_ids
            found_terms: list[Query] = []
            marker_terms: list[Query] = []
            for name in fields:
                for term in searcher.lexicon(name):
                    if needle in term:
                        found_terms.append(Term(name, term.decode("utf-8")))
                    elif term == marker:
                        marker_terms.append(Term(name, LONG_WORD_MARKER))
            account_term = Term("account", str(account))

            def matching(terms: list[Query]) -> set:
                if not terms:
                    return set()
                query = And([account_term, Or(terms)])
                return {message_ids[docnum] for docnum in searcher.docs_for_query(query)}

            found = matching(found_terms)
            return found, matching(marker_terms) - found

    def close(self) -> None:
        """Release the index; changes not yet committed are discarded."""
        with self._commit_lock, self._searcher_lock:
            if self._closed:
                return
            self._closed = True
            self._pending = {}
            self._searcher.close()
            self._write_lock.release()
