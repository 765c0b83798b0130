"""The word rules every ``ISearchIndex`` adapter shares.

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
  A field that had a word cut also gets the term ``LONG_WORD_MARKER`` (which no text can
  produce: ``#`` separates words), so a substring search knows which messages the
  cut words make uncertain and must verify them.
* ``substring_word`` says when a needle is one word: every occurrence of it in a text
  then lies inside one term of that text, so the messages having a term that contains
  it are exactly the messages containing it (``search_containing`` of the adapters),
  apart from the marked ones.  This is what lets IMAP's substring SEARCH BODY
  (RFC 9051 §6.4.4: ``BODY ell`` finds "hello") be answered by the index.
* A query with no words at all (``"*"``, ``""``) matches every message of the account:
  "every word of the text" is then vacuously true, and it is the only answer that keeps
  the candidates a superset of what a substring search would match.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import regex

from mailserve.interfaces import SEARCH_FIELDS

#: Longest word kept, in characters; longer words are cut (on indexing and on search alike).
MAX_WORD_CHARS = 100
#: Longest query text accepted, in characters.
MAX_QUERY_CHARS = 8192
#: Most distinct terms one query may look up.
MAX_QUERY_TERMS = 256
#: Term added to a field in which a word longer than ``MAX_WORD_CHARS`` was cut.
LONG_WORD_MARKER = "#long"
#: Longest word ``search_containing`` looks for (the term dictionary scan is linear in it).
MAX_SUBSTRING_CHARS = MAX_WORD_CHARS
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
# One word of a spaced script, whole: what ``substring_word`` accepts.
_ONE_SPACED_WORD = regex.compile(
    rf"[[\p{{L}}\p{{N}}]--[{_UNSPACED}]][[\p{{L}}\p{{N}}\p{{M}}]--[{_UNSPACED}]]*", regex.V1
)
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
            words[LONG_WORD_MARKER] = None
        return list(words)
    terms: dict[str, None] = {}
    for unspaced, spaced in _WORD.findall(fold_case(text)):
        if spaced:
            terms[spaced[:MAX_WORD_CHARS]] = None
            if len(spaced) > MAX_WORD_CHARS:
                terms[LONG_WORD_MARKER] = None
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


def substring_word(text: str) -> str | None:
    """The folded ``text`` when it is exactly one word of a spaced script, else None.

    Such a needle occurs in a text only inside one of the text's words (a word is a
    maximal run of letters, digits and marks, and the needle starts with a letter or
    digit), so the index answers a substring search for it from its term dictionary.
    Words longer than ``MAX_SUBSTRING_CHARS`` are refused (None): no term can hold them.
    """
    if not isinstance(text, str):
        raise TypeError(f"search text must be str, not {type(text).__name__}")
    folded = fold_case(text)
    if not folded or len(folded) > MAX_SUBSTRING_CHARS:
        return None
    if folded.isascii():
        return folded if _ASCII_WORD.fullmatch(folded) else None
    return folded if _ONE_SPACED_WORD.fullmatch(folded) else None


def check_substring_fields(fields: object) -> tuple[str, ...]:
    """``fields`` as a tuple of ``SEARCH_FIELDS`` names, or a ``ValueError``."""
    if isinstance(fields, str) or not fields:
        raise ValueError("fields must be a non-empty sequence of field names")
    fields = tuple(fields)  # type: ignore[arg-type]
    for field in fields:
        if field not in SEARCH_FIELDS:
            raise ValueError(f"cannot search field {field!r}; expected one of {', '.join(SEARCH_FIELDS)}")
    return fields


def check_substring_request(account: object, fields: object, word: str) -> tuple[tuple[str, ...], str]:
    """The checked ``(fields, folded word)`` of a ``search_containing`` call, or a ``ValueError``."""
    check_id(account, "account")
    checked = check_substring_fields(fields)
    folded = substring_word(word)
    if folded is None:
        raise ValueError(f"not one word: {word[:60]!r}")
    return checked, folded


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
