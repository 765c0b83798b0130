"""DKIM signing and verification (RFC 6376, RFC 8463 Ed25519, RFC 8301 key sizes).

dkimpy does the canonicalisation and cryptography.  Its DNS access is a synchronous hook
(``dnsfunc``), so verification is split in three: the DKIM-Signature fields are parsed
(cheap), every key record ``<s>._domainkey.<d>`` is fetched through the async
:class:`mailserve.dns.Resolver`, and then the hashing and signature checks — CPU work
proportional to the message size — run in a thread with a ``dnsfunc`` that only reads the
fetched table.  The reactor thread never waits on DNS or RSA.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet import defer, threads
from twisted.logger import Logger

from mailserve.dns import DNSTemporaryError, InvalidDomainName, Resolver

__all__ = [
    "DKIMResult",
    "DKIMSigningError",
    "KeyTable",
    "MalformedMessageError",
    "fetch_keys",
    "generate_dkim_key",
    "oversigned_headers",
    "parse_header_fields",
    "sign_dkim",
    "sign_dkim_async",
    "verify_dkim",
]

log = Logger()

#: RFC 6376 section 6.1 lets a verifier limit how many signatures it checks; each costs a
#: DNS query and a hash of the message, so a hostile message with hundreds is cut short.
MAX_SIGNATURES = 10
#: RFC 8301 section 3.2: RSA keys shorter than 1024 bits MUST NOT be considered valid.
MIN_RSA_BITS = 1024
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")

#: Header fields signed when present (RFC 6376 section 5.4.1's list).
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "in-reply-to", "references", "list-id",
    "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe",
    "list-post", "list-owner", "list-archive",
)
#: Header fields signed one more time than they occur, so that adding another instance
#: (or adding one where none was) breaks the signature (RFC 6376 section 8.15).
OVERSIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "in-reply-to", "references",
)


class DKIMSigningError(ValueError):
    """The message or key cannot be signed (bad key, no From header, bad parameters)."""


@dataclass(frozen=True)
class DKIMResult:
    """The verification of one DKIM-Signature (RFC 6376 section 6, RFC 8601 section 2.7.1).

    ``result`` is ``pass``, ``fail`` (the signature does not verify), ``permerror``
    (malformed signature, missing or unusable key), ``temperror`` (the key could not be
    fetched) or ``neutral`` (a signature not checked because of :data:`MAX_SIGNATURES`).
    ``header_b`` is the start of the ``b=`` value, which RFC 6008 uses to tell signatures
    of one domain apart in Authentication-Results.
    """

    domain: str
    selector: str
    result: str
    algorithm: str
    header_b: str
    identity: str = ""
    reason: str = ""


class KeyTable:
    """DKIM key TXT records fetched ahead of verification, served to dkimpy's ``dnsfunc``.

    ``temporary`` holds names whose lookup failed temporarily; asking for one of those
    raises ``dkim.DnsTimeoutError`` so dkimpy never reads a failure as "no key".
    """

    def __init__(self) -> None:
        self.records: dict[str, bytes | None] = {}
        self.temporary: dict[str, str] = {}

    @staticmethod
    def key(name: str | bytes) -> str:
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        return name.rstrip(".").lower()

    def __call__(self, name: str | bytes, timeout: float = 5) -> bytes | None:
        key = self.key(name)
        if key in self.temporary:
            raise dkimpy.DnsTimeoutError(self.temporary[key])
        return self.records.get(key)


def _pick_key_record(records: list[bytes]) -> bytes | None:
    """RFC 6376 section 3.6.2.2: one TXT record per key; prefer one that looks like a key."""
    for record in records:
        if record.lstrip().startswith(b"v=DKIM1") or b"p=" in record:
            return record
    return records[0] if records else None


async def fetch_keys(resolver: Resolver, names: set[str], table: KeyTable | None = None) -> KeyTable:
    """Fetch the TXT record of every ``selector._domainkey.domain`` in ``names`` at once."""
    table = table if table is not None else KeyTable()
    wanted = sorted({KeyTable.key(n) for n in names} - set(table.records) - set(table.temporary))

    async def one(name: str) -> None:
        try:
            table.records[name] = _pick_key_record(await resolver.txt(name))
        except DNSTemporaryError as exc:
            table.temporary[name] = exc.reason
        except InvalidDomainName:
            table.records[name] = None

    await defer.gatherResults([defer.ensureDeferred(one(name)) for name in wanted], consumeErrors=True)
    return table


class MalformedMessageError(ValueError):
    """The header section cannot be parsed into fields (RFC 5322 section 2.2)."""


def parse_header_fields(message: bytes) -> list[tuple[bytes, bytes]]:
    """``(name, value)`` pairs of the header section, as dkimpy sees them.

    Raises :class:`MalformedMessageError` for a header section that is not a sequence of
    fields (a line without a colon, a continuation line first), which hostile or broken
    senders do produce.
    """
    try:
        headers, _body = dkimpy.rfc822_parse(message)
    except (dkimpy.MessageFormatError, IndexError) as exc:
        raise MalformedMessageError(f"malformed header section: {exc}") from exc
    return headers


def header_section(message: bytes) -> bytes:
    """The bytes before the first empty line (RFC 5322 section 2.1)."""
    return re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]


def _signature_headers(message: bytes, header_name: bytes = b"dkim-signature") -> list[bytes]:
    try:
        headers = parse_header_fields(message)
    except MalformedMessageError:
        return []
    return [value for name, value in headers if name.lower() == header_name]


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return parse_tag_value(value)
    except InvalidTagValueList:
        return {}


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace")


def _b_prefix(tags: dict[bytes, bytes]) -> str:
    return re.sub(r"\s+", "", _text(tags.get(b"b")))[:16]


def _check_key(name: str, record: bytes | None) -> tuple[str, str]:
    """``("", "")`` if the key record is usable, else ``(result, reason)``."""
    if record is None:
        return "permerror", f"no key record at {name}"
    try:
        public_key, key_bits, _ktag, _tlsrpt = dkimpy.evaluate_pk(name, record)
    except dkimpy.KeyFormatError as exc:
        return "permerror", f"unusable key at {name}: {exc}"
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        # dkimpy lets a few parse errors of hostile records through untyped.
        return "permerror", f"unusable key at {name}: {exc}"
    if public_key is None:
        return "permerror", f"key at {name} is not for email"
    tags = _tags(record)
    if not tags.get(b"p", b"").strip():
        # RFC 6376 section 3.6.1: an empty p= means the key was revoked.
        return "permerror", f"key at {name} is revoked"
    if tags.get(b"k", b"rsa") == b"rsa" and key_bits < MIN_RSA_BITS:
        return "permerror", f"RSA key at {name} is only {key_bits} bits (RFC 8301)"
    return "", ""


def _verify_all(message: bytes, table: KeyTable, minkey: int) -> list[DKIMResult]:
    """Runs in a thread: hash the message and check every signature against ``table``."""
    results: list[DKIMResult] = []
    signatures = _signature_headers(message)
    if not signatures:
        return results
    verifier = dkimpy.DKIM(message, minkey=minkey, logger=QuietDKIMLogger())
    for index, value in enumerate(signatures):
        tags = _tags(value)
        domain = _text(tags.get(b"d")).lower()
        selector = _text(tags.get(b"s"))
        algorithm = _text(tags.get(b"a"))
        header_b = _b_prefix(tags)
        identity = _text(tags.get(b"i"))

        def result(
            outcome: str,
            reason: str = "",
            fields: tuple[str, str, str, str, str] = (domain, selector, algorithm, header_b, identity),
        ) -> DKIMResult:
            return DKIMResult(fields[0], fields[1], outcome, fields[2], fields[3], fields[4], reason)

        if index >= MAX_SIGNATURES:
            results.append(result("neutral", "too many signatures; not checked"))
            continue
        if not tags:
            results.append(result("permerror", "DKIM-Signature is not a tag list"))
            continue
        try:
            dkimpy.validate_signature_fields(tags)
        except dkimpy.ValidationError as exc:
            results.append(result("permerror", str(exc)))
            continue
        signed = [h.strip().lower() for h in _text(tags.get(b"h")).split(":")]
        if "from" not in signed:
            # RFC 6376 section 5.4: the From header field MUST be signed.
            results.append(result("permerror", "From header field not signed"))
            continue
        if algorithm not in ALGORITHMS:
            # RFC 8301 section 3.1: rsa-sha1 MUST NOT be used for verifying.
            results.append(result("permerror", f"algorithm {algorithm!r} is not accepted (RFC 8301)"))
            continue
        if _text(tags.get(b"v")) != "1":
            results.append(result("permerror", "unsupported DKIM version"))
            continue
        name = KeyTable.key(f"{selector}._domainkey.{domain}")
        if name in table.temporary:
            results.append(result("temperror", f"key lookup failed: {table.temporary[name]}"))
            continue
        problem, reason = _check_key(name, table.records.get(name))
        if problem:
            results.append(result(problem, reason))
            continue
        try:
            valid = verifier.verify(idx=index, dnsfunc=table)
        except dkimpy.ValidationError as exc:
            results.append(result("fail", str(exc)))
            continue
        except dkimpy.KeyFormatError as exc:
            results.append(result("permerror", str(exc)))
            continue
        except dkimpy.DKIMException as exc:
            results.append(result("permerror", str(exc)))
            continue
        results.append(result("pass") if valid else result("fail", "signature did not verify"))
    return results


class QuietDKIMLogger:
    """dkimpy logs every failed signature at error level; the result already says it."""

    def debug(self, *args, **kwargs) -> None:
        pass

    info = warning = error = debug

    def isEnabledFor(self, level: int) -> bool:
        return False


def verify_dkim(resolver: Resolver, message: bytes, minkey: int = MIN_RSA_BITS) -> defer.Deferred:
    """Verify every DKIM-Signature on ``message``; fires with a list of :class:`DKIMResult`.

    The list is in header order (topmost signature first) and empty for an unsigned
    message.  DNS failures give ``temperror`` results, never an exception.
    """
    return defer.ensureDeferred(_verify_dkim(resolver, message, minkey))


async def _verify_dkim(resolver: Resolver, message: bytes, minkey: int) -> list[DKIMResult]:
    try:
        headers = await threads.deferToThread(parse_header_fields, message)
    except MalformedMessageError as exc:
        if re.search(rb"(?im)^dkim-signature\s*:", header_section(message)):
            return [DKIMResult("", "", "permerror", "", "", "", str(exc))]
        return []
    signatures = [value for name, value in headers if name.lower() == b"dkim-signature"]
    if not signatures:
        return []
    names = set()
    for value in signatures[:MAX_SIGNATURES]:
        tags = _tags(value)
        if tags.get(b"s") and tags.get(b"d"):
            names.add(f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}")
    table = await fetch_keys(resolver, names)
    return await threads.deferToThread(_verify_all, message, table, minkey)


def oversigned_headers(message: bytes) -> list[bytes]:
    """The ``h=`` list for ``message``: present signable fields, over-signed ones once more.

    RFC 6376 section 5.4.2: listing a field once more than it occurs stops anyone adding
    another instance; listing an absent field stops anyone adding it at all.
    """
    try:
        headers = parse_header_fields(message)
    except MalformedMessageError as exc:
        raise DKIMSigningError(str(exc)) from exc
    counts: dict[str, int] = {}
    for name, _value in headers:
        lowered = name.decode("ascii", "replace").lower()
        counts[lowered] = counts.get(lowered, 0) + 1
    include: list[bytes] = []
    for field in SIGNED_HEADERS:
        occurrences = counts.get(field, 0)
        if field in OVERSIGNED_HEADERS:
            occurrences += 1
        include.extend([field.encode("ascii")] * occurrences)
    return include


def dkimpy_private_key(private_key_pem: bytes | str, algorithm: str) -> bytes:
    """The private key in the form dkimpy wants: PKCS#1 PEM for RSA, base64 seed for Ed25519."""
    if isinstance(private_key_pem, str):
        private_key_pem = private_key_pem.encode("ascii")
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        if algorithm == "ed25519-sha256":
            # RFC 8463 keys are often kept as the bare base64 seed.
            try:
                raw = base64.b64decode(private_key_pem.strip(), validate=True)
            except ValueError:
                raw = b""
            if len(raw) == 32:
                return base64.b64encode(raw)
        raise DKIMSigningError(f"cannot load private key: {exc}") from exc
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DKIMSigningError("rsa-sha256 needs an RSA private key")
        if key.key_size < MIN_RSA_BITS:
            raise DKIMSigningError(f"RSA key of {key.key_size} bits is too short (RFC 8301)")
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DKIMSigningError("ed25519-sha256 needs an Ed25519 private key")
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


def sign_dkim(
    message: bytes,
    domain: str,
    selector: str,
    private_key_pem: bytes | str,
    algorithm: str = "rsa-sha256",
    headers: list[str] | None = None,
    identity: str | None = None,
) -> bytes:
    """The ``DKIM-Signature:`` header field (with CRLF) to prepend to ``message``.

    Canonicalisation is relaxed/relaxed (RFC 6376 section 3.4), which survives the
    whitespace and folding changes relays commonly make.  ``headers`` defaults to
    :func:`oversigned_headers`.  CPU-bound (RSA): call it from a thread, or use
    :func:`sign_dkim_async`.
    """
    if algorithm not in ALGORITHMS:
        raise DKIMSigningError(f"unsupported algorithm {algorithm!r}; use one of {ALGORITHMS}")
    if not domain or not selector:
        raise DKIMSigningError("domain and selector are required")
    key = dkimpy_private_key(private_key_pem, algorithm)
    include = [h.encode("ascii") if isinstance(h, str) else h for h in headers] if headers else oversigned_headers(message)
    if b"from" not in [h.lower() for h in include] or not _has_from(message):
        raise DKIMSigningError("the message has no From header field to sign (RFC 6376 section 5.4)")
    signer = dkimpy.DKIM(message, signature_algorithm=algorithm.encode("ascii"), logger=QuietDKIMLogger())
    try:
        return signer.sign(
            selector.encode("ascii"),
            domain.encode("ascii"),
            key,
            identity=identity.encode("ascii") if identity else None,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
    except dkimpy.DKIMException as exc:
        raise DKIMSigningError(str(exc)) from exc


def _has_from(message: bytes) -> bool:
    try:
        headers = parse_header_fields(message)
    except MalformedMessageError as exc:
        raise DKIMSigningError(str(exc)) from exc
    return any(name.lower() == b"from" for name, _value in headers)


def sign_dkim_async(message: bytes, *args, **kwargs) -> defer.Deferred:
    """:func:`sign_dkim` in a thread, for callers on the reactor thread."""
    return threads.deferToThread(sign_dkim, message, *args, **kwargs)


def generate_dkim_key(algorithm: str = "rsa-sha256", rsa_bits: int = 2048) -> tuple[bytes, str]:
    """A new signing key: ``(private key PEM, TXT record value to publish)``.

    RSA keys are 2048 bits by default (RFC 8301 section 3.2 recommends at least 2048)
    and written as PKCS#1 PEM, which dkimpy and OpenDKIM both read.  Ed25519 keys (RFC
    8463) are written as PKCS#8 PEM; their TXT value carries the raw 32-octet public key.
    """
    if algorithm in ("rsa-sha256", "rsa"):
        if rsa_bits < 2048:
            raise ValueError("RSA DKIM keys must be at least 2048 bits")
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode("ascii")
    if algorithm in ("ed25519-sha256", "ed25519"):
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return pem, "v=DKIM1; k=ed25519; p=" + base64.b64encode(public_raw).decode("ascii")
    raise ValueError(f"unsupported algorithm {algorithm!r}; use one of {ALGORITHMS}")
