"""The key schema of the metadata store: every key mailserve writes is built here.

The store is one ordered keyspace, so the schema is chosen for the scans the protocols do:

========================================  =============================================
key                                       value
========================================  =============================================
``m`` acct ``S`` name                     account counter (modseq, next ids, quota use)
``m`` acct ``B`` mbox                     mailbox record
``m`` acct ``N`` name                     mailbox id by full name (hierarchy order)
``m`` acct ``s`` name                     subscription (IMAP may subscribe absent names)
``m`` acct ``U`` mbox uid                 message id: a mailbox in UID order = sequence order
``m`` acct ``M`` msgid                    message record (blob, size, keywords, mailboxes)
``m`` acct ``C`` modseq                   change set committed at that modseq (the change log)
``m`` acct ``T`` hash(message-id)         thread id of the conversation holding that id
``m`` acct ``V`` name                     Sieve script (``mailserve.sieve``)
``m`` acct ``v``                          name of the account's active Sieve script
``m`` acct ``W`` key                      Sieve vacation/duplicate/redirect tracking (expiry)
``b`` sha256                              reference count of a blob
``p`` sha256                              parsed structure of a blob, cached at ingest
``d`` ``D`` domain                        domain record
``d`` ``A`` account id                    account record
``d`` ``L`` login                         account id by login name
``d`` ``E`` address                       where mail to an address goes (account, alias, group)
``d`` ``S`` name                          directory counters (next account id)
``d`` ``P`` acct sha256                   app password of an account
``d`` ``T`` sha256                        API token
``d`` ``K`` domain 0 selector             DKIM signing key of a domain
``q`` ...                                 outbound queue (``mailserve.smtp.queue``)
``s`` ...                                 spam filter: Bayes, greylisting, reputation
``x`` name                                server-wide values (the search index's format)
========================================  =============================================

Integers are big-endian so that byte order is numeric order.  ``acct`` is a u32, ``mbox``,
``uid`` and ``msgid`` are u32, ``modseq`` is a u64.
"""

from __future__ import annotations

import hashlib
import struct

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
U32U32 = struct.Struct(">II")


def _account(acct: int, tag: bytes) -> bytes:
    return b"m" + U32.pack(acct) + tag


def account_prefix(acct: int) -> bytes:
    """Every key of one account's mail (used to delete an account)."""
    return b"m" + U32.pack(acct)


def counter(acct: int, name: bytes) -> bytes:
    return _account(acct, b"S") + name


MODSEQ = b"modseq"
NEXT_MESSAGE = b"msgid"
NEXT_MAILBOX = b"mbox"
NEXT_THREAD = b"thread"
QUOTA_BYTES_USED = b"qbytes"
QUOTA_MESSAGES_USED = b"qcount"
QUOTA_BYTES_LIMIT = b"qbytes-limit"
QUOTA_MESSAGES_LIMIT = b"qcount-limit"


def mailbox(acct: int, mbox: int) -> bytes:
    return _account(acct, b"B") + U32.pack(mbox)


def mailboxes_prefix(acct: int) -> bytes:
    return _account(acct, b"B")


def mailbox_name(acct: int, name: str) -> bytes:
    return _account(acct, b"N") + name.encode("utf-8")


def mailbox_names_prefix(acct: int) -> bytes:
    return _account(acct, b"N")


def subscription(acct: int, name: str) -> bytes:
    return _account(acct, b"s") + name.encode("utf-8")


def subscriptions_prefix(acct: int) -> bytes:
    return _account(acct, b"s")


def uid(acct: int, mbox: int, uid_: int) -> bytes:
    return _account(acct, b"U") + U32U32.pack(mbox, uid_)


def uids_prefix(acct: int, mbox: int) -> bytes:
    return _account(acct, b"U") + U32.pack(mbox)


def uid_from_key(key: bytes) -> int:
    return U32.unpack_from(key, len(key) - 4)[0]


def message(acct: int, msgid: int) -> bytes:
    return _account(acct, b"M") + U32.pack(msgid)


def messages_prefix(acct: int) -> bytes:
    return _account(acct, b"M")


def parsed(blob_id: str) -> bytes:
    """Parsing depends only on the bytes, so copies and duplicate deliveries share it."""
    return b"p" + bytes.fromhex(blob_id)


def change(acct: int, modseq: int) -> bytes:
    return _account(acct, b"C") + U64.pack(modseq)


def changes_prefix(acct: int) -> bytes:
    return _account(acct, b"C")


def modseq_from_change_key(key: bytes) -> int:
    return U64.unpack_from(key, len(key) - 8)[0]


def thread(acct: int, message_id: str) -> bytes:
    digest = hashlib.sha1(message_id.encode("utf-8", "surrogateescape")).digest()[:12]
    return _account(acct, b"T") + digest


def sieve_script(acct: int, name: str) -> bytes:
    return _account(acct, b"V") + name.encode("utf-8")


def sieve_scripts_prefix(acct: int) -> bytes:
    return _account(acct, b"V")


def sieve_active(acct: int) -> bytes:
    """Where the name of the active Sieve script is kept: outside the script-name range, so a
    scan of the scripts never meets it and no script name can collide with it."""
    return _account(acct, b"v")


def blob_refs(blob_id: str) -> bytes:
    return b"b" + bytes.fromhex(blob_id)


BLOB_REFS_PREFIX = b"b"


def blob_id_from_refs_key(key: bytes) -> str:
    return key[1:].hex()


# -- directory -----------------------------------------------------------------
def domain(name: str) -> bytes:
    return b"dD" + name.encode("utf-8")


DOMAINS_PREFIX = b"dD"


def account(acct: int) -> bytes:
    return b"dA" + U32.pack(acct)


ACCOUNTS_PREFIX = b"dA"


def login(name: str) -> bytes:
    return b"dL" + name.encode("utf-8")


LOGINS_PREFIX = b"dL"


def address(addr: str) -> bytes:
    return b"dE" + addr.encode("utf-8")


ADDRESSES_PREFIX = b"dE"

NEXT_ACCOUNT = b"dSaccount"


def app_password(acct: int, digest: bytes) -> bytes:
    """An app password of an account, by the SHA-256 of the secret (``mailserve.directory.credentials``)."""
    return b"dP" + U32.pack(acct) + digest


def app_passwords_prefix(acct: int) -> bytes:
    return b"dP" + U32.pack(acct)


def api_token(digest: bytes) -> bytes:
    """An API token, by the SHA-256 of the secret: a bearer token is found without knowing its owner."""
    return b"dT" + digest


API_TOKENS_PREFIX = b"dT"


NEXT_CREDENTIAL = b"dScredential"


# -- outbound queue --------------------------------------------------------------
QUEUE_PREFIX = b"q"

#: ``qE`` id -> queued message (``mailserve.smtp.queue.QueueEntry``): envelope, blob, per-recipient status.
QUEUE_ENTRIES_PREFIX = b"qE"
#: ``qT`` due-time(ms) id -> b"": the schedule, scanned in time order for entries due now.
QUEUE_SCHEDULE_PREFIX = b"qT"
#: Counter of queue entry ids.
QUEUE_NEXT_ID = b"qSid"


def queue_entry(entry_id: int) -> bytes:
    return QUEUE_ENTRIES_PREFIX + U64.pack(entry_id)


def queue_entry_id(key: bytes) -> int:
    return U64.unpack_from(key, len(QUEUE_ENTRIES_PREFIX))[0]


def queue_schedule(due_ms: int, entry_id: int) -> bytes:
    return QUEUE_SCHEDULE_PREFIX + U64.pack(max(0, due_ms)) + U64.pack(entry_id)


def queue_schedule_parts(key: bytes) -> tuple[int, int]:
    """``(due_ms, entry_id)`` of a schedule key."""
    start = len(QUEUE_SCHEDULE_PREFIX)
    return U64.unpack_from(key, start)[0], U64.unpack_from(key, start + 8)[0]


# -- DKIM signing keys (``mailserve.mailauth.keystore``) ---------------------------
def dkim_key(domain: str, selector: str) -> bytes:
    return b"dK" + domain.encode("utf-8") + b"\x00" + selector.encode("utf-8")


def dkim_keys_prefix(domain: str | None = None) -> bytes:
    return b"dK" + (domain.encode("utf-8") + b"\x00" if domain else b"")


# -- spam filter (``mailserve.spam.store``) ----------------------------------------
# Per-account Bayes data lives under the account's prefix, so deleting an account drops it:
#   ``m`` acct ``Z`` ``t`` token-hash    Bayes token counts (spam u32, ham u32)
#   ``m`` acct ``Z`` ``n`` ``spam|ham``  messages learned as spam / as ham (counter)
#   ``m`` acct ``Z`` ``l`` digest        how one message was learned (to undo or skip relearning)
# Server-wide data (the global Bayes database, greylisting, reputation) lives under ``s``:
#   ``s`` ``B`` ``t``/``n``/``l`` ...    the global Bayes database, laid out as above
#   ``s`` ``G`` hash(triplet)            greylisting record of a (client net, sender, recipient)
#   ``s`` ``R`` kind ``:`` value         sender reputation of an IP network, domain or address
def _spam_bayes(acct: int | None) -> bytes:
    return b"sB" if acct is None else _account(acct, b"Z")


def spam_token(acct: int | None, token_hash: bytes) -> bytes:
    """Counts of one Bayes token (an 8-byte hash) in the global or an account's database."""
    return _spam_bayes(acct) + b"t" + token_hash


def spam_tokens_prefix(acct: int | None) -> bytes:
    return _spam_bayes(acct) + b"t"


def spam_learned_total(acct: int | None, is_spam: bool) -> bytes:
    return _spam_bayes(acct) + b"n" + (b"spam" if is_spam else b"ham")


def spam_learned_message(acct: int | None, digest: bytes) -> bytes:
    return _spam_bayes(acct) + b"l" + digest


def spam_learned_prefix(acct: int | None) -> bytes:
    return _spam_bayes(acct) + b"l"


SPAM_GREYLIST_PREFIX = b"sG"


def spam_greylist(triplet_hash: bytes) -> bytes:
    return SPAM_GREYLIST_PREFIX + triplet_hash


SPAM_REPUTATION_PREFIX = b"sR"


def spam_reputation(kind: str, value: str) -> bytes:
    """Reputation of one sender identity: ``kind`` is ``ip``, ``domain`` or ``address``."""
    return SPAM_REPUTATION_PREFIX + kind.encode("ascii") + b":" + value.encode("utf-8")


# -- Sieve reply and duplicate tracking (``mailserve.sieve.stage``) -------------------
#   ``m`` acct ``W`` key                 expiry (u64 seconds since the epoch) of a tracked key:
#                                        ``vacation:<sha256>`` (RFC 5230 §4.2), ``duplicate:<sha256>``
#                                        (RFC 7352 §3), ``redirect:<sha256>`` (a redirect already sent)
def sieve_tracking(acct: int, key: str) -> bytes:
    return _account(acct, b"W") + key.encode("utf-8")


def sieve_tracking_prefix(acct: int) -> bytes:
    return _account(acct, b"W")


# -- server-wide values -----------------------------------------------------------------
#: The format of what the full-text index holds (``mailserve.core.indexer.INDEX_FORMAT``).
SEARCH_INDEX_FORMAT = b"xsearch-index-format"
