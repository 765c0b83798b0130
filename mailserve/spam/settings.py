"""The spam filter's rules, weights, lists and thresholds: ``rules.toml`` plus overrides.

The defaults ship as a data file (``mailserve/spam/rules.toml``, documented inline) so that
an administrator reads one file to learn what every rule weighs, and overrides any key from
the server configuration's ``[spam]`` section without copying the rest.  Overrides are
merged table by table; lists are replaced whole.  Everything is validated once, here, into
frozen objects, and every mistake is reported with its key path (``spam.scores.FOO: ...``)
the way :mod:`mailserve.config` reports its own.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from mailserve.dns import InvalidDomainName, normalize_domain

__all__ = [
    "BayesBand",
    "DNSListSettings",
    "SpamSettings",
    "SpamSettingsError",
    "default_rules_text",
    "load_settings",
]

ACTIONS = ("spam", "discard", "reject")
#: An override file or mapping larger than this many entries is refused outright.
MAX_LIST_ENTRIES = 100_000


class SpamSettingsError(ValueError):
    """The rules file or an override is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[str]) -> None:
        super().__init__("invalid spam filter settings:\n  " + "\n  ".join(issues))
        self.issues = issues


@dataclass(frozen=True)
class BayesBand:
    """A probability band of the classifier and the rule it fires (SpamAssassin's BAYES_nn)."""

    rule: str
    below: float


@dataclass(frozen=True)
class DNSListSettings:
    """One DNS list (RFC 5782) and how its answers map to rules."""

    zone: str
    kind: str
    codes: Mapping[str, str]
    bitmask: Mapping[int, str]

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(self.codes.values()) + tuple(self.bitmask.values())


@dataclass(frozen=True)
class SpamSettings:
    """Validated, immutable spam filter settings (see ``rules.toml`` for their meaning)."""

    spam_threshold: float
    discard_threshold: float
    reject_threshold: float
    max_scan_bytes: int
    max_parts: int
    max_tokens: int
    max_urls: int
    max_dnsbl_domains: int
    bayes_enabled: bool
    bayes_min_spam: int
    bayes_min_ham: int
    bayes_account_min_spam: int
    bayes_account_min_ham: int
    account_training_updates_global: bool
    unknown_word_strength: float
    unknown_word_prob: float
    min_prob_strength: float
    max_discriminators: int
    autolearn: bool
    autolearn_spam_score: float
    autolearn_ham_score: float
    bayes_bands: tuple[BayesBand, ...]
    greylist_enabled: bool
    greylist_min_score: float
    greylist_delay: float
    greylist_retry_window: float
    greylist_pass_lifetime: float
    greylist_ipv4_prefix: int
    greylist_ipv6_prefix: int
    reputation_enabled: bool
    reputation_min_messages: int
    reputation_factor: float
    reputation_max_score: float
    reputation_alpha: float
    reputation_lifetime: float
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    allow_domains: frozenset[str]
    block_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    block_domains: frozenset[str]
    dnsbls: tuple[DNSListSettings, ...]
    shorteners: frozenset[str]
    suspicious_tlds: frozenset[str]
    freemail_domains: frozenset[str]
    scores: Mapping[str, float]

    def score(self, rule: str) -> float:
        """The weight of ``rule``; every rule the filter can fire is checked to have one."""
        return self.scores[rule]


def default_rules_text() -> str:
    """The text of the shipped ``rules.toml``."""
    return resources.files("mailserve.spam").joinpath("rules.toml").read_text(encoding="utf-8")


def merge_overrides(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: tables recursively, everything else replaced."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Reader:
    """Typed access to the merged document, collecting every problem instead of stopping."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.issues: list[str] = []

    def table(self, name: str) -> Mapping[str, Any]:
        value = self.document.get(name, {})
        if not isinstance(value, Mapping):
            self.issues.append(f"spam.{name}: expected a table, got {type(value).__name__}")
            return {}
        return value

    def number(self, table: str, key: str, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self.table(table).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.issues.append(f"spam.{table}.{key}: expected a finite number, got {value!r}")
            return 0.0
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.issues.append(f"spam.{table}.{key}: {value} is outside [{minimum}, {maximum}]")
        return float(value)

    def integer(self, table: str, key: str, minimum: int = 0, maximum: int = 2**31) -> int:
        value = self.table(table).get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.issues.append(f"spam.{table}.{key}: expected an integer, got {value!r}")
            return minimum
        if not minimum <= value <= maximum:
            self.issues.append(f"spam.{table}.{key}: {value} is outside [{minimum}, {maximum}]")
        return value

    def boolean(self, table: str, key: str) -> bool:
        value = self.table(table).get(key)
        if not isinstance(value, bool):
            self.issues.append(f"spam.{table}.{key}: expected true or false, got {value!r}")
            return False
        return value

    def strings(self, table: str, key: str) -> list[str]:
        value = self.table(table).get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.issues.append(f"spam.{table}.{key}: expected a list of strings")
            return []
        if len(value) > MAX_LIST_ENTRIES:
            self.issues.append(f"spam.{table}.{key}: more than {MAX_LIST_ENTRIES} entries")
            return []
        return value

    def domains(self, table: str, key: str) -> frozenset[str]:
        result = set()
        for entry in self.strings(table, key):
            try:
                result.add(normalize_domain(entry))
            except InvalidDomainName as exc:
                self.issues.append(f"spam.{table}.{key}: {entry!r} is not a domain name: {exc}")
        return frozenset(result)

    def networks(self, table: str, key: str) -> tuple:
        result = []
        for entry in self.strings(table, key):
            try:
                result.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                self.issues.append(f"spam.{table}.{key}: {entry!r} is not an IP network: {exc}")
        return tuple(result)


def _read_dnsbls(reader: _Reader) -> tuple[DNSListSettings, ...]:
    raw = reader.document.get("dnsbl", [])
    if not isinstance(raw, list):
        reader.issues.append("spam.dnsbl: expected an array of tables ([[spam.dnsbl]])")
        return ()
    lists = []
    for index, entry in enumerate(raw):
        where = f"spam.dnsbl[{index}]"
        if not isinstance(entry, Mapping):
            reader.issues.append(f"{where}: expected a table")
            continue
        unknown = set(entry) - {"zone", "kind", "codes", "bitmask"}
        if unknown:
            reader.issues.append(f"{where}: unknown keys {sorted(unknown)}")
        try:
            zone = normalize_domain(str(entry.get("zone", "")))
        except InvalidDomainName as exc:
            reader.issues.append(f"{where}.zone: {exc}")
            continue
        kind = entry.get("kind")
        if kind not in ("ip", "domain"):
            reader.issues.append(f"{where}.kind: expected \"ip\" or \"domain\", got {kind!r}")
            continue
        codes: dict[str, str] = {}
        for code, rule in dict(entry.get("codes", {})).items():
            try:
                address = ipaddress.IPv4Address(code)
            except ValueError:
                reader.issues.append(f"{where}.codes: {code!r} is not an IPv4 address")
                continue
            if address not in ipaddress.IPv4Network("127.0.0.0/8"):
                reader.issues.append(f"{where}.codes: {code} is outside 127.0.0.0/8 (RFC 5782 section 2.1)")
                continue
            codes[str(address)] = str(rule)
        bitmask: dict[int, str] = {}
        for bit, rule in dict(entry.get("bitmask", {})).items():
            try:
                value = int(bit)
            except ValueError:
                reader.issues.append(f"{where}.bitmask: {bit!r} is not a number")
                continue
            if value <= 0 or value > 255 or value & (value - 1):
                reader.issues.append(f"{where}.bitmask: {bit} is not a single bit of an octet")
                continue
            bitmask[value] = str(rule)
        if not codes and not bitmask:
            reader.issues.append(f"{where}: needs `codes` or `bitmask`")
            continue
        lists.append(DNSListSettings(zone, kind, MappingProxyType(codes), MappingProxyType(bitmask)))
    return tuple(lists)


def _read_bands(reader: _Reader) -> tuple[BayesBand, ...]:
    raw = reader.table("bayes").get("bands", [])
    bands = []
    previous = 0.0
    if not isinstance(raw, list) or not raw:
        reader.issues.append("spam.bayes.bands: expected a non-empty array of tables")
        return ()
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("rule"), str):
            reader.issues.append(f"spam.bayes.bands[{index}]: expected a table with `rule` and `below`")
            continue
        below = entry.get("below")
        if isinstance(below, bool) or not isinstance(below, (int, float)) or below <= previous:
            reader.issues.append(f"spam.bayes.bands[{index}].below: must be a number above {previous}")
            continue
        previous = float(below)
        bands.append(BayesBand(entry["rule"], float(below)))
    if bands and bands[-1].below <= 1.0:
        reader.issues.append("spam.bayes.bands: the last band must reach above 1.0")
    return tuple(bands)


#: Rules the filter's code can fire with a fixed weight (DNS lists and bands are added).
CODE_RULES = frozenset(["GTUBE", "SPF_PASS", "SPF_FAIL", "SPF_SOFTFAIL", "SPF_NEUTRAL", "SPF_NONE", "SPF_TEMPERROR", "SPF_PERMERROR", "SPF_HELO_FAIL", "DKIM_VALID", "DKIM_INVALID", "DKIM_TEMPERROR", "DKIM_NONE", "DMARC_PASS", "DMARC_REJECT", "DMARC_QUARANTINE", "DMARC_POLICY_NONE_FAIL", "DMARC_NONE", "ARC_PASS", "ARC_FAIL", "HELO_BARE_IP", "HELO_NOT_FQDN", "HELO_LOCALHOST", "HELO_CLAIMS_OUR_NAME", "RDNS_NONE", "RDNS_DYNAMIC", "AUTHENTICATED", "ALLOWLISTED", "BLOCKLISTED_IP", "BLOCKLISTED_DOMAIN", "BLOCKLISTED_URL", "RCPT_COUNT_HIGH", "MISSING_DATE", "INVALID_DATE", "DATE_IN_FUTURE", "DATE_IN_PAST", "MISSING_MESSAGE_ID", "INVALID_MESSAGE_ID", "MISSING_FROM", "MULTIPLE_FROM", "INVALID_FROM", "MISSING_TO", "MISSING_SUBJECT", "SUBJECT_ALL_CAPS", "SUBJECT_EXCLAMATIONS", "FROM_NAME_HAS_ADDRESS", "REPLYTO_FREEMAIL_DIFFERS", "FROM_HOMOGLYPH_DOMAIN", "FROM_SUSPICIOUS_TLD", "FORGED_RECEIVED", "RECEIVED_MALFORMED", "MISSING_MIME_VERSION", "BULK_UNSUBSCRIBE", "NULL_SENDER_NOT_BOUNCE", "HTML_ONLY", "HTML_TEXT_MISMATCH", "HTML_IMAGE_ONLY", "HTML_HIDDEN_TEXT", "HTML_FORM", "EMPTY_BODY", "EXECUTABLE_ATTACHMENT", "URL_IP_LITERAL", "URL_USERINFO", "URL_SHORTENER", "URL_SUSPICIOUS_TLD", "URL_HOMOGLYPH_DOMAIN", "URL_MIXED_SCRIPT", "URL_TEXT_MISMATCH", "URL_MANY"])


def load_settings(overrides: Mapping[str, Any] | None = None, rules_text: str | None = None) -> SpamSettings:
    """Parse ``rules_text`` (default: the shipped ``rules.toml``), merge ``overrides``, validate.

    Raises :class:`SpamSettingsError` listing every problem (bad TOML, wrong types, ranges,
    thresholds out of order, a rule with no score).
    """
    try:
        document = tomllib.loads(rules_text if rules_text is not None else default_rules_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpamSettingsError([f"rules file: {exc}"]) from None
    if overrides:
        if not isinstance(overrides, Mapping):
            raise SpamSettingsError(["spam: the override must be a table"])
        known = set(document)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SpamSettingsError([f"spam.{key}: unknown section (known: {', '.join(sorted(known))})" for key in unknown])
        document = merge_overrides(document, overrides)
    r = _Reader(document)
    raw_scores = r.table("scores")
    scores: dict[str, float] = {}
    for rule, value in raw_scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            r.issues.append(f"spam.scores.{rule}: expected a finite number, got {value!r}")
            continue
        scores[str(rule)] = float(value)
    dnsbls = _read_dnsbls(r)
    bands = _read_bands(r)
    needed = set(CODE_RULES) | {band.rule for band in bands}
    for dnsbl in dnsbls:
        needed.update(dnsbl.rules)
    for rule in sorted(needed - set(scores)):
        r.issues.append(f"spam.scores.{rule}: the rule has no score")
    settings = SpamSettings(
        spam_threshold=r.number("thresholds", "spam"),
        discard_threshold=r.number("thresholds", "discard"),
        reject_threshold=r.number("thresholds", "reject"),
        max_scan_bytes=r.integer("limits", "max_scan_bytes", 1024, 64 << 20),
        max_parts=r.integer("limits", "max_parts", 1, 10_000),
        max_tokens=r.integer("limits", "max_tokens", 10, 1_000_000),
        max_urls=r.integer("limits", "max_urls", 0, 100_000),
        max_dnsbl_domains=r.integer("limits", "max_dnsbl_domains", 0, 1000),
        bayes_enabled=r.boolean("bayes", "enabled"),
        bayes_min_spam=r.integer("bayes", "min_spam", 0),
        bayes_min_ham=r.integer("bayes", "min_ham", 0),
        bayes_account_min_spam=r.integer("bayes", "account_min_spam", 0),
        bayes_account_min_ham=r.integer("bayes", "account_min_ham", 0),
        account_training_updates_global=r.boolean("bayes", "account_training_updates_global"),
        unknown_word_strength=r.number("bayes", "unknown_word_strength", 0.0, 100.0),
        unknown_word_prob=r.number("bayes", "unknown_word_prob", 0.0, 1.0),
        min_prob_strength=r.number("bayes", "min_prob_strength", 0.0, 0.5),
        max_discriminators=r.integer("bayes", "max_discriminators", 1, 10_000),
        autolearn=r.boolean("bayes", "autolearn"),
        autolearn_spam_score=r.number("bayes", "autolearn_spam_score"),
        autolearn_ham_score=r.number("bayes", "autolearn_ham_score"),
        bayes_bands=bands,
        greylist_enabled=r.boolean("greylist", "enabled"),
        greylist_min_score=r.number("greylist", "min_score"),
        greylist_delay=r.number("greylist", "delay", 0, 86400),
        greylist_retry_window=r.number("greylist", "retry_window", 1, 365 * 86400),
        greylist_pass_lifetime=r.number("greylist", "pass_lifetime", 1, 3650 * 86400),
        greylist_ipv4_prefix=r.integer("greylist", "ipv4_prefix", 8, 32),
        greylist_ipv6_prefix=r.integer("greylist", "ipv6_prefix", 16, 128),
        reputation_enabled=r.boolean("reputation", "enabled"),
        reputation_min_messages=r.integer("reputation", "min_messages", 1),
        reputation_factor=r.number("reputation", "factor", 0.0, 10.0),
        reputation_max_score=r.number("reputation", "max_score", 0.0, 1000.0),
        reputation_alpha=r.number("reputation", "alpha", 0.001, 1.0),
        reputation_lifetime=r.number("reputation", "lifetime", 60, 3650 * 86400),
        allow_networks=r.networks("allowlist", "networks"),
        allow_domains=r.domains("allowlist", "domains"),
        block_networks=r.networks("blocklist", "networks"),
        block_domains=r.domains("blocklist", "domains"),
        dnsbls=dnsbls,
        shorteners=r.domains("urls", "shorteners"),
        suspicious_tlds=frozenset(t.lower().strip(".") for t in r.strings("urls", "suspicious_tlds")),
        freemail_domains=r.domains("urls", "freemail_domains"),
        scores=MappingProxyType(scores),
    )
    if not settings.spam_threshold < settings.discard_threshold <= settings.reject_threshold:
        r.issues.append(
            "spam.thresholds: must satisfy spam < discard <= reject "
            f"(got {settings.spam_threshold}, {settings.discard_threshold}, {settings.reject_threshold})"
        )
    if r.issues:
        raise SpamSettingsError(r.issues)
    return settings
