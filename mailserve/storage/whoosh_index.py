"""The full-text index on Whoosh, and the word rules every ``ISearchIndex`` adapter shares.

Word rules
----------
Every adapter must answer the same question the same way, so the analysis of text into
index terms is done here, in Python, once, and the engines only ever see ready-made terms
separated by spaces (Whoosh's ``SpaceSeparatedTokenizer``, tantivy's ``whitespace``
tokenizer).  A user's query goes through the same analysis and becomes plain term lookups:
no engine query parser is ever involved, so query syntax (``OR``, ``"``, ``*``,
``field:x``, ``(``) is just text and can neither fail nor widen a search.

* Text is normalised to NFKC and case-folded (Unicode default caseless matching, the
  "i;unicode-casemap" idea of RFC 5051 section 2): ``É`` finds ``é``, ``STRASSE`` finds
  ``Straße``, full-width ``Ｔｏｋｙｏ`` finds ``Tokyo``.  Accents are kept: ``cafe`` does
  not find ``café``.
* A word is a run of letters and digits, with combining marks kept inside it (Devanagari
  and Thai vowel signs are marks); everything else separates words.
* Han, kana and Hangul are written without spaces, so their runs are indexed as single
  characters plus overlapping pairs (the bigram scheme of Lucene's CJK analyser), and a
  query run of two or more of them looks up its pairs.  Every message that contains the
  query as a substring is therefore found; a few more may be, which is why callers that
  need IMAP substring semantics (RFC 3501 section 6.4.4) filter the candidates.
* Words are cut to ``MAX_WORD_CHARS`` on both sides, so a long word still finds itself.
* A query with no words at all (``"*"``, ``""``) matches every message of the account:
  "every word of the text" is then vacuously true, and it is the only answer that keeps
  the candidates a superset of what a substring search would match.

Concurrency
-----------
One thread (the ``SearchIndexer``'s worker) calls ``add``, ``remove`` and ``commit``;
searches come from another (the reactor thread).  ``search`` always uses the snapshot of
the last commit and never waits for a commit to finish, only for the instant in which
``commit`` swaps in the new snapshot.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import regex
from twisted.logger import Logger
from whoosh import fields, formats
from whoosh import index as whoosh_index
from whoosh.filedb.filestore import FileStorage
from whoosh.query import And, Or, Query, Term
from zope.interface import implementer

from mailserve.interfaces import SEARCH_FIELDS, ISearchIndex

#: Longest word kept, in characters; longer words are cut (on indexing and on search alike).
MAX_WORD_CHARS = 100
#: Longest query text accepted, in characters.
MAX_QUERY_CHARS = 8192
#: Most distinct terms one query may look up.
MAX_QUERY_TERMS = 256
#: Largest account or message id (both engines store them as 64-bit integers).
MAX_ID = 2**63 - 1
#: The pseudo-field that searches every field of ``SEARCH_FIELDS``.
ALL_FIELDS = "text"

# Scripts written without spaces between words; U+30FC (prolonged sound mark) and
# U+3005 (iteration mark) belong to no script but only ever occur inside such runs.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\u30fc\u3005"
_WORD = regex.compile(
    rf"(?P<unspaced>[{_UNSPACED}]+)"
    rf"|(?P<spaced>[[\p{{L}}\p{{N}}]--[{_UNSPACED}]][[\p{{L}}\p{{N}}\p{{M}}]--[{_UNSPACED}]]*)",
    regex.V1,
)
# For ASCII text the rules above reduce to runs of ASCII letters and digits.
_ASCII_WORD = re.compile(r"[a-z0-9]+")
_DOCUMENT_KEYS = frozenset(SEARCH_FIELDS) | {"account", "message"}


class SearchIndexLocked(RuntimeError):
    """Another open index (in this or another process) owns the index directory."""


class SearchIndexClosed(RuntimeError):
    """The index was used after ``close``."""


def fold_case(text: str) -> str:
    """NFKC-normalised, case-folded ``text``, the form every term is compared in.

    NFKC is applied again after folding because folding can produce sequences
    (``İ`` becomes ``i`` + U+0307) that are not in NFKC.
    """
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def index_terms(text: str) -> list[str]:
    """The distinct terms to index for ``text``, in order of first appearance."""
    if text.isascii():  # Most mail: the same rules, several times faster.
        words = dict.fromkeys(_ASCII_WORD.findall(text.lower()))
        if any(len(word) > MAX_WORD_CHARS for word in words):
            words = dict.fromkeys(word[:MAX_WORD_CHARS] for word in words)
        return list(words)
    terms: dict[str, None] = {}
    for unspaced, spaced in _WORD.findall(fold_case(text)):
        if spaced:
            terms[spaced[:MAX_WORD_CHARS]] = None
        else:
            terms.update(dict.fromkeys(unspaced))
            terms.update(dict.fromkeys(unspaced[i : i + 2] for i in range(len(unspaced) - 1)))
    return list(terms)


def query_terms(text: str) -> list[str]:
    """The distinct terms a message must all contain to match the query ``text``.

    Raises ``ValueError`` for a query too long or with too many terms: the query is
    user input, and every term is a separate index lookup.
    """
    if not isinstance(text, str):
        raise TypeError(f"search text must be str, not {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"search text is {len(text)} characters long; at most {MAX_QUERY_CHARS} are allowed")
    terms: dict[str, None] = {}
    for unspaced, spaced in _WORD.findall(fold_case(text)):
        if spaced:
            terms[spaced[:MAX_WORD_CHARS]] = None
        elif len(unspaced) == 1:
            terms[unspaced] = None
        else:
            terms.update(dict.fromkeys(unspaced[i : i + 2] for i in range(len(unspaced) - 1)))
        if len(terms) > MAX_QUERY_TERMS:
            raise ValueError(f"search text has more than {MAX_QUERY_TERMS} distinct words")
    return list(terms)


def check_id(value: object, what: str) -> int:
    """``value`` as an account or message id, or a ``TypeError``/``ValueError`` saying why not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} {value} is outside 0..{MAX_ID}")
    return value


def check_search_field(field: object) -> str:
    """``field`` if it can be searched (one of ``SEARCH_FIELDS`` or ``"text"``)."""
    if field != ALL_FIELDS and field not in SEARCH_FIELDS:
        raise ValueError(f"cannot search field {field!r}; expected one of {', '.join(SEARCH_FIELDS)} or text")
    return field  # type: ignore[return-value]


@dataclass(frozen=True)
class AnalysedDocument:
    """A message ready for an engine: its key and, per field, its terms joined by spaces."""

    account: int
    message: int
    terms: dict[str, str]

    @property
    def key(self) -> str:
        """The unique key of the message across accounts, ``"account:message"``."""
        return document_key(self.account, self.message)


def document_key(account: int, message: int) -> str:
    """The unique key of one message of one account, as stored in the engines."""
    return f"{account}:{message}"


def analyse_documents(
    documents: Iterable[Mapping[str, object]],
) -> list[AnalysedDocument]:
    """Check every document of a batch and turn it into terms, before anything is written.

    The whole batch is rejected on the first bad document, so a bad batch leaves the
    index untouched.  When a batch holds the same message twice the last one wins, as
    if they had been added one after the other.
    """
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Iterable):
        raise TypeError("documents must be a list of dicts")
    analysed: dict[tuple[int, int], AnalysedDocument] = {}
    for position, document in enumerate(documents):
        if not isinstance(document, Mapping):
            raise TypeError(f"document {position} must be a dict, not {type(document).__name__}")
        unknown = set(document) - _DOCUMENT_KEYS
        if unknown:
            raise ValueError(f"document {position} has unknown fields: {', '.join(sorted(map(str, unknown)))}")
        if "account" not in document or "message" not in document:
            raise ValueError(f"document {position} needs both 'account' and 'message'")
        account = check_id(document["account"], f"document {position}: account")
        message = check_id(document["message"], f"document {position}: message")
        terms: dict[str, str] = {}
        for field in SEARCH_FIELDS:
            value = document.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"document {position}: {field} must be str, not {type(value).__name__}")
            words = index_terms(value)
            if words:
                terms[field] = " ".join(words)
        analysed.pop((account, message), None)
        analysed[(account, message)] = AnalysedDocument(account, message, terms)
    return list(analysed.values())


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

    def close(self) -> None:
        """Release the index; changes not yet committed are discarded."""
        with self._commit_lock, self._searcher_lock:
            if self._closed:
                return
            self._closed = True
            self._pending = {}
            self._searcher.close()
            self._write_lock.release()
