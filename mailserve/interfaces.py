"""Every contract in mailserve, in one place.

Each adapter implements exactly one of these interfaces and passes that interface's one
contract test suite (``tests/storage/test_*_contract.py``), so that a new backend
(PostgreSQL metadata, S3 blobs) is a new module plus one line in the suite's parameter list.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IReadTransaction(Interface):
    """A consistent snapshot of the metadata store.

    Keys and values are ``bytes``.  Keys sort bytewise; the core's key schema
    (``mailserve.core.keys``) relies on that order for range scans.
    """

    def get(key: bytes) -> bytes | None:
        """The value stored at ``key``, or ``None``."""

    def scan(start: bytes, end: bytes | None = None, reverse: bool = False):
        """Iterate ``(key, value)`` pairs with ``start <= key < end`` in key order.

        ``end=None`` means "every key that starts with ``start``" (a prefix scan).
        """

    def counter(key: bytes) -> int:
        """The current value of the counter at ``key`` (0 if never written)."""


class IWriteTransaction(IReadTransaction):
    """A read transaction that can also change the store; all or nothing."""

    def put(key: bytes, value: bytes) -> None:
        """Store ``value`` at ``key``, replacing what was there."""

    def delete(key: bytes) -> bool:
        """Remove ``key``; ``True`` if it existed."""

    def incr(key: bytes, delta: int = 1) -> int:
        """Add ``delta`` to the counter at ``key`` and return the new value."""


class IMetadataStore(Interface):
    """An ordered key-value store with transactions: the home of all mail metadata.

    Writes are serialised (one writer at a time, as LMDB and a PostgreSQL
    ``SERIALIZABLE`` adapter both allow) and durable when their Deferred fires.
    """

    def read(fn):
        """Run ``fn(txn: IReadTransaction)`` on a fresh snapshot in the calling thread.

        Reads are cheap and may run on the reactor thread.
        """

    def write(fn):
        """Run ``fn(txn: IWriteTransaction)`` on the writer and commit it durably.

        Returns a Deferred that fires, on the reactor thread, with ``fn``'s result once the
        transaction is committed, or fails with ``fn``'s exception after rolling it back.
        Usable only while the store is started under a reactor (see ``write_sync``).
        """

    def write_sync(fn):
        """Run ``fn`` in a write transaction in the calling thread (for the CLI and tools)."""

    def start() -> None:
        """Start the writer (called when the service starts)."""

    def close() -> None:
        """Finish queued writes and close the store."""


class IBlobStore(Interface):
    """Immutable message bytes, addressed by the hex SHA-256 of their content.

    All methods block (disk or network): the core calls them through ``deferToThread``.
    ``put`` returns only once the bytes are durable.  Reference counts are kept by the core
    in the metadata store, in the same transaction as the message that uses the blob, so
    the store itself only needs put/get/delete.
    """

    def put(data: bytes) -> str:
        """Store ``data`` durably and return its blob id (hex SHA-256); idempotent."""

    def put_file(path: str, blob_id: str) -> str:
        """Take ownership of the finished file at ``path`` whose SHA-256 is ``blob_id``.

        The spooler computes the digest while it writes, so big messages are never read twice.
        """

    def get(blob_id: str) -> bytes:
        """The whole blob; ``KeyError`` if it does not exist."""

    def read(blob_id: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the blob)."""

    def size(blob_id: str) -> int:
        """The blob's length in bytes; ``KeyError`` if it does not exist."""

    def exists(blob_id: str) -> bool:
        """Whether the blob is stored."""

    def delete(blob_id: str) -> bool:
        """Remove the blob; ``True`` if it existed."""

    def ids():
        """Iterate over every stored blob id (for garbage collection)."""


class ISearchIndex(Interface):
    """A full-text index of messages, per account.

    Only the ``SearchIndexer`` service writes to it, in batches, off the reactor thread.
    Documents are dicts with the fields in ``SEARCH_FIELDS`` (strings) plus ``account``
    (int) and ``message`` (int, the message id within the account).
    """

    def add(documents: list) -> None:
        """Index (or re-index) ``documents``; visible to ``search`` after ``commit``."""

    def remove(account: int, messages: list) -> None:
        """Drop the given message ids of ``account`` from the index."""

    def commit() -> None:
        """Make every add and remove so far visible and durable."""

    def search(account: int, field: str, text: str) -> set:
        """Message ids of ``account`` whose ``field`` contains ``text``.

        ``field`` is one of ``SEARCH_FIELDS`` or ``"text"`` (headers and body).  Matching is
        by words, case-insensitive; callers that need IMAP's substring semantics filter
        the candidates further.
        """

    def search_containing(account: int, fields, word: str) -> tuple:
        """``(found, uncertain)`` for a substring search of one word, answered from the terms.

        ``found``: messages of ``account`` with a term in one of ``fields`` containing ``word``.
        ``uncertain``: messages in which a field had a word too long to index whole, which the
        caller must verify by reading them.  Every other indexed message does not contain
        ``word``: this is what lets IMAP SEARCH BODY answer without scanning every message.
        """

    def close() -> None:
        """Release the index."""


SEARCH_FIELDS = ("from", "to", "cc", "bcc", "subject", "body", "headers")


class IChangeListener(Interface):
    """Something told about every committed change of an account (IDLE, JMAP push, indexer)."""

    def changed(changes) -> None:
        """``changes`` is a ``mailserve.core.changes.ChangeSet``; called on the reactor thread."""


class IDirectory(Interface):
    """Domains, accounts, aliases and groups; who may log in and where mail goes."""

    def authenticate(login: str, password: str, remote_ip: str | None = None):
        """Deferred firing with the ``Account`` or failing with ``AuthenticationFailed``."""

    def resolve_recipient(address: str):
        """The list of local account ids that mail to ``address`` reaches (empty: unknown)."""

    def is_local_domain(domain: str) -> bool:
        """Whether mail for ``domain`` is delivered here."""


class IServiceContainer(Interface):
    """What protocol factories are given: the assembled parts of one server."""

    config = Attribute("The validated ``mailserve.config.Config``")
    core = Attribute("The ``mailserve.core.MailCore``")
    directory = Attribute("The ``mailserve.directory.Directory``")
