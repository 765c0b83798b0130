"""Bayes tokens of a message: words of the text, header clues, links and HTML structure.

The scheme follows SpamBayes' tokenizer (Tim Peters et al.), whose choices were each
measured on large corpora: words are lower-cased and stripped of edge punctuation; words of
3 to 12 characters are kept and longer ones collapse to a ``skip:`` token (long "words" are
mostly encoded junk whose exact value never repeats); header fields contribute prefixed
tokens (``subject:cheap``, ``from:addr:example.org``); and every link contributes its host
and each parent domain, so a new subdomain of a known spam domain is still recognised.

Tokens are a *set* per message (a word counts once however often it appears, as in
Graham's "A Plan for Spam"), capped at ``max_tokens`` so a huge message costs bounded
storage lookups.  The filter's own header fields (``X-Spam-*``) and trace and
authentication fields are ignored, so a message moved to Junk does not teach the
classifier our own verdict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from mailserve.spam.message import AnalyzedMessage

__all__ = ["token_hash", "tokenize"]

_STRIP = ".,;:!?\"'()[]<>{}*`~|_-=+#/\\"
_EMAIL = re.compile(r"[\w.+-]{1,64}@([\w-]{1,63}(?:\.[\w-]{1,63})+)")
_ADDRESS = re.compile(r"<?([^<>\s@]{1,64})@([^<>\s@]{1,255})>?")
#: Header fields whose values say nothing stable about the sender's intent, or are ours.
_IGNORED_HEADERS = frozenset({
    "received", "date", "return-path", "delivered-to", "authentication-results",
    "arc-seal", "arc-message-signature", "arc-authentication-results", "dkim-signature",
    "x-original-to", "message-id", "references", "in-reply-to", "content-length",
})
_CONTENT_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})


def token_hash(token: str) -> bytes:
    """The 8-byte key of a token in the store (BLAKE2b; collisions are negligible at 2**64)."""
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _words(text: str, prefix: str = "") -> Iterable[str]:
    for raw in text.split():
        word = raw.strip(_STRIP).lower()
        if not word:
            continue
        if 3 <= len(word) <= 12:
            yield prefix + word
        elif len(word) > 12:
            if "@" in word:
                match = _EMAIL.search(word)
                if match:
                    yield prefix + "email:" + match.group(1)
                    continue
            # SpamBayes: the first character and the length in tens tell "base64 junk"
            # from "German compound word" without remembering every variant.
            yield f"{prefix}skip:{word[0]} {len(word) // 10 * 10}"


def _host_tokens(host: str) -> Iterable[str]:
    labels = host.split(".")
    for index in range(max(0, len(labels) - 4), len(labels) - 1):
        yield "url:" + ".".join(labels[index:])


def _header_tokens(message: AnalyzedMessage) -> Iterable[str]:
    names_seen: set[str] = set()
    for name, value in message.headers:
        if name.startswith(("x-spam", "arc-", "x-mailserve")) or name in _IGNORED_HEADERS:
            if name not in names_seen and not name.startswith("x-spam"):
                names_seen.add(name)
                yield f"header:{name}"
            continue
        if name not in names_seen:
            names_seen.add(name)
            yield f"header:{name}"
        if name == "subject":
            yield from _words(value, "subject:")
            if value.isupper() and len(value) > 8:
                yield "subject:ALLCAPS"
            if "!" in value:
                yield f"subject:bang:{min(value.count('!'), 3)}"
        elif name in ("from", "reply-to", "sender", "to", "cc"):
            addresses = _ADDRESS.findall(value)
            if name in ("to", "cc"):
                yield f"{name}:count:{min(len(addresses), 5)}"
                for _local, domain in addresses[:5]:
                    yield f"{name}:addr:{domain.lower().rstrip('>')}"
                continue
            if not addresses:
                yield f"{name}:noaddress"
            for local, domain in addresses[:3]:
                yield f"{name}:addr:{domain.lower()}"
                yield f"{name}:local:{local.lower()[:20]}"
            display = value.split("<", 1)[0] if "<" in value else ""
            if display.strip():
                yield from _words(display, f"{name}:name:")
            else:
                yield f"{name}:no real name"
        elif name in _CONTENT_HEADERS:
            yield f"{name}:{value.split(';', 1)[0].strip().lower()[:40]}"
        elif name in ("x-mailer", "user-agent", "x-priority", "precedence", "list-id", "importance"):
            yield f"{name}:{' '.join(value.lower().split()[:2])[:40]}"
    message_id = message.header("message-id") or ""
    if "@" in message_id:
        yield "message-id:@" + message_id.rsplit("@", 1)[1].strip("> ").lower()[:60]
    else:
        yield "message-id:invalid"


def tokenize(message: AnalyzedMessage, max_tokens: int = 3000) -> list[str]:
    """The distinct tokens of ``message`` in order of first appearance, at most ``max_tokens``."""
    seen: dict[str, None] = {}

    def add(tokens: Iterable[str]) -> bool:
        for token in tokens:
            if token not in seen:
                seen[token] = None
                if len(seen) >= max_tokens:
                    return False
        return True

    def structure() -> Iterable[str]:
        for content_type in message.content_types:
            yield f"part:{content_type}"
        for tag in message.html_tags:
            yield f"html:{tag}"
        if message.images:
            yield f"html:images:{min(message.images, 5)}"
        if message.hidden_text:
            yield "html:hidden text"
        for name in message.attachments:
            if "." in name:
                yield "filename:ext:" + name.rsplit(".", 1)[1].lower()[:10]
        for url in message.urls:
            yield f"proto:{url.scheme}"
            if url.is_ip_literal:
                yield "url:ip literal"
            else:
                yield from _host_tokens(url.host)
            path = url.url.split(url.host, 1)[-1]
            for piece in re.split(r"[/?&=.#_-]+", path)[:8]:
                if 3 <= len(piece) <= 12:
                    yield "url-path:" + piece.lower()

    if add(_header_tokens(message)) and add(structure()):
        add(_words(message.body_text))
    return list(seen)
