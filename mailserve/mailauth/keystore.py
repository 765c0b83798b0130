"""DKIM signing keys per domain, kept in the metadata store, and the DNS records to publish.

Keys live beside the domain records (not in files) so that every node of a future shared
store signs with the same keys, and so that ``mailserve dkim generate`` works whether or
not the server runs.  A domain may have several keys (an RSA and an Ed25519 one, RFC 8463
recommends signing with both during the transition); submission signs with each.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mailserve.core import keys
from mailserve.core.model import pack, unpack
from mailserve.directory.directory import AlreadyExists, NotFound, normalise_domain
from mailserve.interfaces import IMetadataStore
from mailserve.mailauth.dkim import generate_dkim_key

#: Algorithm names accepted from people (``rsa``) and what they stand for (RFC 6376 §3.3, RFC 8463).
ALGORITHMS = {"rsa": "rsa-sha256", "rsa-sha256": "rsa-sha256", "ed25519": "ed25519-sha256",
              "ed25519-sha256": "ed25519-sha256"}
#: A selector is one or more DNS labels (RFC 6376 §3.1), lower-cased here.
SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
#: Enough for rotating both algorithms with room to spare; a limit so the store cannot be flooded.
MAX_KEYS_PER_DOMAIN = 10


class InvalidKeyRequest(ValueError):
    """An algorithm or selector that cannot be used; ``field`` names the offending input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DKIMKey:
    domain: str
    selector: str
    algorithm: str
    private_key: str  # PEM
    txt: str  # the value of the TXT record at SELECTOR._domainkey.DOMAIN
    created: int

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def public(self) -> dict[str, Any]:
        """Everything but the private key, and the record to publish (RFC 6376 §3.6.2.1)."""
        return {
            "domain": self.domain,
            "selector": self.selector,
            "algorithm": self.algorithm,
            "created": self.created,
            "record": {"name": f"{self.record_name}.", "type": "TXT", "value": self.txt},
        }


def default_selector(algorithm: str, now: float) -> str:
    """``ms202612r`` / ``ms202612e``: dated, so a rotation gets a fresh name."""
    return time.strftime("ms%Y%m", time.gmtime(now)) + ("e" if algorithm.startswith("ed25519") else "r")


def make_key(domain: str, algorithm: str = "rsa", selector: str | None = None, now: float | None = None) -> DKIMKey:
    """Generate a key (blocking: RSA generation takes ~100 ms; run it in a thread on a server)."""
    if algorithm not in ALGORITHMS:
        raise InvalidKeyRequest(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}", "algorithm")
    algorithm = ALGORITHMS[algorithm]
    now = time.time() if now is None else now
    selector = (selector or default_selector(algorithm, now)).lower()
    if len(selector) > 63 or not SELECTOR.match(selector):
        raise InvalidKeyRequest(f"not a valid DKIM selector: {selector!r} (DNS labels, RFC 6376 §3.1)", "selector")
    private, txt = generate_dkim_key(algorithm)
    return DKIMKey(normalise_domain(domain), selector, algorithm, private.decode("ascii"), txt, int(now))


class DKIMKeyStore:
    """The one place DKIM keys are read and written (the signer, the admin API and the CLI use it)."""

    def __init__(
        self,
        metadata: IMetadataStore,
        execute: Callable[[Callable], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metadata = metadata
        self._execute = execute or metadata.write_sync
        self._clock = clock

    def generate(self, domain: str, algorithm: str = "rsa", selector: str | None = None) -> Any:
        """Create a key (blocking) and store it; returns (or fires with) the :class:`DKIMKey`."""
        return self.add(make_key(domain, algorithm, selector, self._clock()))

    @staticmethod
    def add_txn(txn: Any, key: DKIMKey) -> DKIMKey:
        if txn.get(keys.domain(key.domain)) is None:
            raise NotFound(f"no such domain: {key.domain}; add it first (mailserve domain add {key.domain})")
        if txn.get(keys.dkim_key(key.domain, key.selector)) is not None:
            raise AlreadyExists(f"{key.domain} already has a DKIM key with selector {key.selector!r}")
        if len(list(txn.scan(keys.dkim_keys_prefix(key.domain)))) >= MAX_KEYS_PER_DOMAIN:
            raise AlreadyExists(f"{key.domain} has {MAX_KEYS_PER_DOMAIN} DKIM keys; remove one first")
        txn.put(keys.dkim_key(key.domain, key.selector), pack(asdict(key)))
        return key

    def add(self, key: DKIMKey) -> Any:
        return self._execute(lambda txn: self.add_txn(txn, key))

    def list(self, domain: str | None = None) -> list[DKIMKey]:
        prefix = keys.dkim_keys_prefix(normalise_domain(domain) if domain else None)
        return self.metadata.read(lambda txn: [DKIMKey(**unpack(v)) for _, v in txn.scan(prefix)])

    def get(self, domain: str, selector: str) -> DKIMKey | None:
        data = self.metadata.read(lambda txn: txn.get(keys.dkim_key(normalise_domain(domain), selector.lower())))
        return None if data is None else DKIMKey(**unpack(data))

    def remove(self, domain: str, selector: str) -> Any:
        domain, selector = normalise_domain(domain), selector.lower()

        def fn(txn) -> None:
            if not txn.delete(keys.dkim_key(domain, selector)):
                raise NotFound(f"no DKIM key with selector {selector!r} for {domain}")

        return self._execute(fn)

    @staticmethod
    def remove_all_txn(txn: Any, domain: str) -> None:
        """Drop every key of a domain (in the transaction that removes the domain)."""
        for key, _ in list(txn.scan(keys.dkim_keys_prefix(domain))):
            txn.delete(key)
