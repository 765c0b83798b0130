"""Signing mail that leaves through us: DKIM for submissions, ARC seals for forwards.

:class:`OutboundSigner` is built once per server (``MailServer.outbound_signer``) over the DKIM
key store (``mailserve.mailauth.keystore``):

* :meth:`OutboundSigner.sign_submission` DKIM-signs a message a user submitted with every key
  the sender's domain has -- typically an RSA-2048 and an Ed25519 key, since RFC 8463 section
  4 recommends signing with both while verifiers learn Ed25519.  Each signature covers the
  RFC 6376 section 5.4.1 fields present and over-signs From, To, Cc, Subject, Date,
  Message-ID, MIME and threading fields (section 8.15: one more instance than present, so
  nobody can add another From or Subject without breaking the signature).
* :meth:`OutboundSigner.seal_forward` adds an ARC set (RFC 8617 section 5.1) to a message
  we forward (an alias or Sieve redirect to a remote address), recording the
  Authentication-Results we computed on arrival, so the final receiver can trust them
  although forwarding breaks SPF.

RSA signing is CPU work of a few milliseconds: it runs in a worker thread.  Key lookups are
one short read transaction of the metadata store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger

from mailserve.dns import InvalidDomainName, normalize_domain
from mailserve.mailauth.arc import arc_seal
from mailserve.mailauth.dkim import DKIMSigningError, sign_dkim
from mailserve.mailauth.dmarc import FromDomainError, from_domain_of
from mailserve.mailauth.keystore import DKIMKey, DKIMKeyStore
from mailserve.mailauth.results import (
    format_authentication_results,
    split_header_section,
    strip_authentication_results,
)

__all__ = ["OutboundSigner", "sender_domain_of"]

#: Only this much of a message is searched for its From field (the header section of real
#: mail is a few KiB; the SMTP session already bounds line lengths).
MAX_HEADER_SCAN = 256 * 1024


class OutboundSigner:
    """DKIM signatures for submitted mail and ARC seals for forwarded mail; see the module docstring.

    :param keystore: where each domain's DKIM keys are.
    :param hostname: this server's host name; with ``arc_domain`` empty, the domain whose
        RSA key seals forwards is the host name or its nearest parent domain with a key.
    :param arc_domain: the sealing domain, when the administrator names one.
    :param sign: whether to DKIM-sign submissions; ``seal``: whether to ARC-seal forwards.
    :param timestamp: a clock for the seal's ``t=`` tag (tests); default: now.
    """

    log = Logger()

    def __init__(
        self,
        keystore: DKIMKeyStore,
        hostname: str,
        arc_domain: str = "",
        sign: bool = True,
        seal: bool = True,
        timestamp: Callable[[], int] | None = None,
    ) -> None:
        self.keystore = keystore
        self.hostname = hostname.lower().rstrip(".")
        self.arc_domain = arc_domain.lower().rstrip(".")
        self.sign = sign
        self.seal = seal
        self.timestamp = timestamp

    @classmethod
    def from_server(cls, server: Any) -> OutboundSigner:
        config = server.config
        section = config.mailauth
        keystore = DKIMKeyStore(server.metadata, execute=server.metadata.write)
        return cls(keystore, config.server.hostname, section.arc_domain,
                   sign=section.sign_outbound, seal=section.seal_forwarded)

    # -- keys ------------------------------------------------------------------------------
    def keys_for(self, domain: str) -> list[DKIMKey]:
        """Every key of ``domain``, RSA first (the algorithm every verifier knows)."""
        try:
            found = self.keystore.list(domain)
        except ValueError:
            return []
        return sorted(found, key=lambda key: (key.algorithm != "rsa-sha256", key.selector))

    def sealing_key(self) -> DKIMKey | None:
        """The RSA key ARC seals are made with (RFC 8617 section 4.1.3: rsa-sha256 only)."""
        candidates = [self.arc_domain] if self.arc_domain else []
        if not candidates:
            labels = self.hostname.split(".")
            candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
        for domain in candidates:
            for key in self.keys_for(domain):
                if key.algorithm == "rsa-sha256":
                    return key
        return None

    # -- DKIM ------------------------------------------------------------------------------
    def sign_submission(self, message: bytes, sender_domain: str) -> defer.Deferred:
        """``message`` with a DKIM-Signature per key of ``sender_domain`` on top; fires with bytes.

        A domain without keys (or signing turned off) gives the message back unchanged; a key
        that cannot sign (damaged, or a message without From) is logged and skipped, so mail
        still flows -- unsigned mail is judged by SPF, a lost message is lost.
        """
        if not self.sign or not sender_domain:
            return defer.succeed(message)
        keys = self.keys_for(sender_domain)
        if not keys:
            return defer.succeed(message)
        return threads.deferToThread(self._sign_all, message, keys)

    def _sign_all(self, message: bytes, keys: list[DKIMKey]) -> bytes:
        """Runs in a thread: one signature per key, each over the unsigned message."""
        signatures = []
        for key in keys:
            try:
                signatures.append(sign_dkim(message, key.domain, key.selector, key.private_key, key.algorithm))
            except DKIMSigningError as exc:
                self.log.warn("cannot DKIM-sign with {domain} selector {selector}: {reason}",
                              domain=key.domain, selector=key.selector, reason=str(exc))
        # The first key's signature goes on top: RSA, which older verifiers check first.
        return b"".join(signatures) + message

    # -- ARC -------------------------------------------------------------------------------
    def seal_forward(self, message: bytes, authentication_results: str) -> defer.Deferred:
        """``message`` as we forward it: ARC set, our Authentication-Results, then the message.

        ``authentication_results`` is the value (after the field name, folded or not) of the
        Authentication-Results field we wrote when the message arrived; its authserv-id is ours.
        Any field in ``message`` claiming that authserv-id is removed first (RFC 8601 section 5,
        and a second one would make the seal's chain status ``fail``), and the given one is put
        back above the message.  Without a sealing key, or with sealing off, or when the chain
        cannot be extended (RFC 8617 section 5.1.2: 50 instances), only the field is added.
        """
        value = " ".join(authentication_results.replace("\r\n", "\n").split("\n")).strip()
        authserv_id = value.split(";", 1)[0].strip().split()[0] if value else ""
        if not authserv_id:
            return defer.fail(ValueError("authentication_results has no authserv-id"))
        key = self.sealing_key() if self.seal else None
        return threads.deferToThread(self._seal, message, value, authserv_id, key)

    def _seal(self, message: bytes, value: str, authserv_id: str, key: DKIMKey | None) -> bytes:
        stripped = strip_authentication_results(message, authserv_id)
        field = format_authentication_results(value)
        if key is None:
            return field + stripped
        arc_set = arc_seal(stripped, value, key.domain, key.selector, key.private_key,
                           timestamp=self.timestamp() if self.timestamp else None)
        return arc_set + field + stripped



def sender_domain_of(message: bytes, mail_from: str = "") -> str:
    """The domain to sign a submitted message for: its RFC 5322.From domain.

    DMARC (RFC 7489 section 3.1.1) counts a DKIM signature only when its ``d=`` aligns with
    the From domain, so that is the domain whose key signs.  Without a usable single From,
    the envelope sender's domain is used; ``""`` when there is neither.
    """
    fields, _rest = split_header_section(message[:MAX_HEADER_SCAN])
    values = [f.partition(b":")[2] for f in fields if f.partition(b":")[0].strip().lower() == b"from"]
    if len(values) == 1:
        try:
            return from_domain_of(values[0].decode("utf-8", "replace").replace("\r\n", "").replace("\n", ""))
        except FromDomainError:
            pass
    domain = mail_from.rpartition("@")[2] if "@" in mail_from else ""
    try:
        return normalize_domain(domain) if domain else ""
    except InvalidDomainName:
        return ""
