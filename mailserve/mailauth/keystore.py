"""DKIM signing keys per domain, kept in the metadata store, and the DNS records to publish.

Keys live beside the domain records (not in files) so that every node of a future shared
store signs with the same keys, and so that ``mailserve dkim generate`` works whether or
not the server runs.  A domain may have several keys (an RSA and an Ed25519 one, RFC 8463
recommends signing with both during the transition); submission signs with each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mailserve.core import keys
from mailserve.core.model import pack, unpack
from mailserve.directory.directory import AlreadyExists, NotFound, normalise_domain
from mailserve.interfaces import IMetadataStore
from mailserve.mailauth.dkim import generate_dkim_key

ALGORITHMS = {"rsa": "rsa-sha256", "rsa-sha256": "rsa-sha256", "ed25519": "ed25519-sha256",
              "ed25519-sha256": "ed25519-sha256"}


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
        d = asdict(self)
        d.pop("private_key")
        d["record_name"] = self.record_name
        return d


def default_selector(algorithm: str, now: float) -> str:
    """``ms202612r`` / ``ms202612e``: dated, so a rotation gets a fresh name."""
    return time.strftime("ms%Y%m", time.gmtime(now)) + ("e" if algorithm.startswith("ed25519") else "r")


class DKIMKeyStore:
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
        """Create a key (blocking: RSA generation takes ~100 ms) and store it."""
        domain = normalise_domain(domain)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; use rsa or ed25519")
        algorithm = ALGORITHMS[algorithm]
        now = self._clock()
        selector = selector or default_selector(algorithm, now)
        private, txt = generate_dkim_key(algorithm)
        key = DKIMKey(domain, selector, algorithm, private.decode("ascii"), txt, int(now))

        def fn(txn) -> DKIMKey:
            if txn.get(keys.domain(domain)) is None:
                raise NotFound(f"no such domain: {domain}; add it first (mailserve domain add {domain})")
            if txn.get(keys.dkim_key(domain, selector)) is not None:
                raise AlreadyExists(f"{domain} already has a key with selector {selector}")
            txn.put(keys.dkim_key(domain, selector), pack(asdict(key)))
            return key

        return self._execute(fn)

    def list(self, domain: str | None = None) -> list[DKIMKey]:
        prefix = keys.dkim_keys_prefix(normalise_domain(domain) if domain else None)
        return self.metadata.read(lambda txn: [DKIMKey(**unpack(v)) for _, v in txn.scan(prefix)])

    def remove(self, domain: str, selector: str) -> Any:
        domain = normalise_domain(domain)

        def fn(txn) -> None:
            if not txn.delete(keys.dkim_key(domain, selector)):
                raise NotFound(f"{domain} has no DKIM key with selector {selector}")

        return self._execute(fn)


@dataclass(frozen=True)
class DNSRecord:
    name: str
    type: str
    value: str
    comment: str = ""

    def zone_line(self) -> str:
        value = self.value
        if self.type == "TXT":
            # Zone files cap one string at 255 octets (RFC 1035 §3.3.14): split long values.
            chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
            value = " ".join(f'"{c}"' for c in chunks)
        line = f"{self.name}. 3600 IN {self.type} {value}"
        return f"{line}  ; {self.comment}" if self.comment else line


def dns_records(domain: str, hostname: str, dkim_keys: list[DKIMKey]) -> list[DNSRecord]:
    """Every record a domain served here should publish."""
    domain = normalise_domain(domain)
    records = [
        DNSRecord(domain, "MX", f"10 {hostname}.", "mail for the domain goes to this server"),
        DNSRecord(domain, "TXT", f"v=spf1 mx a:{hostname} -all", "SPF (RFC 7208): only this server sends"),
    ]
    for key in dkim_keys:
        records.append(DNSRecord(key.record_name, "TXT", key.txt, f"DKIM {key.algorithm} (RFC 6376)"))
    records.append(
        DNSRecord(f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}",
                  "DMARC (RFC 7489); move to p=reject once reports look clean")
    )
    records.append(DNSRecord(f"_submissions._tcp.{domain}", "SRV", f"0 1 465 {hostname}.",
                             "mail submission over TLS (RFC 6186, RFC 8314)"))
    records.append(DNSRecord(f"_imaps._tcp.{domain}", "SRV", f"0 1 993 {hostname}.", "IMAP over TLS (RFC 6186)"))
    return records
