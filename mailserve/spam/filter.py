"""The composite spam filter: one score per message from many independent signals.

:meth:`SpamFilter.check` is the SMTP pipeline's "spam verdict" stage.  For one message it

1. analyses and tokenizes the message and runs the header, body, greeting and
   authentication rules (:mod:`mailserve.spam.rules`) -- in a worker thread, as parsing is
   CPU work;
2. at the same time asks the DNS lists about the client and the message's domains and
   looks up the client's reverse DNS (:mod:`mailserve.spam.dnsbl`), and reads the Bayes
   counts of the message's tokens (global and per recipient account) in a worker thread;
3. adds local allow/blocklists, sender reputation and the Bayes band, and sums the
   weights into a score;
4. maps the score onto an action by the thresholds (Stalwart's: Junk at 5, discard at 12,
   reject at 15), greylists suspicious mail from unknown triplets, and records reputation
   and greylisting state in one transaction.

Trained with :meth:`SpamFilter.train` (IMAP moves into and out of Junk call it through
:attr:`SpamFilter.training_hook`; ``mailserve spam train`` calls the same code).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger

from mailserve.dns import DNSTemporaryError, InvalidDomainName, Resolver, normalize_domain
from mailserve.interfaces import IMetadataStore, IWriteTransaction
from mailserve.mailauth.psl import PublicSuffixList
from mailserve.spam.bayes import BayesParameters, spam_probability
from mailserve.spam.dnsbl import DNSListChecker, is_internal_address
from mailserve.spam.message import AnalyzedMessage, analyze_message
from mailserve.spam.rules import registered_domain, static_findings
from mailserve.spam.settings import SpamSettings, load_settings
from mailserve.spam.store import GreylistRecord, SpamStore
from mailserve.spam.tokenizer import token_hash, tokenize
from mailserve.spam.verdict import RuleHit, SpamAction, SpamContext, SpamVerdict

__all__ = ["SpamFilter"]

#: Rules that must not feed autolearning or reputation (they are learned opinions).
_LEARNED_PREFIXES = ("BAYES_", "REPUTATION_")
_DYNAMIC_PTR = re.compile(r"(?i)(\d{1,3}[-.x]\d{1,3}[-.x]\d{1,3}|dyn|dhcp|pool|dsl|cable|ppp|client|broadband)")
_REPUTATION_RULES = {"ip": "REPUTATION_IP", "domain": "REPUTATION_DOMAIN", "from": "REPUTATION_FROM"}


class _Prepared:
    """What the worker thread found out about a message."""

    __slots__ = ("analyzed", "findings", "hashes")

    def __init__(self, analyzed: AnalyzedMessage, hashes: list[bytes], findings: list[tuple[str, str]]) -> None:
        self.analyzed = analyzed
        self.hashes = hashes
        self.findings = findings


class SpamFilter:
    """Scores messages and learns from corrections; see the module docstring.

    :param metadata: the metadata store holding Bayes counts, greylisting and reputation.
    :param resolver: for DNS lists and reverse DNS; ``None`` disables both.
    :param hostname: this server's name (HELO and Received forgery checks).
    :param overrides: the ``[spam]`` configuration table, merged over ``rules.toml``.
    :param clock: time source (``IReactorTime``); defaults to the reactor.
    """

    log = Logger()

    def __init__(
        self,
        metadata: IMetadataStore,
        resolver: Resolver | None = None,
        hostname: str = "localhost",
        overrides: Mapping[str, Any] | None = None,
        psl: PublicSuffixList | None = None,
        clock: Any = None,
        settings: SpamSettings | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings if settings is not None else load_settings(overrides)
        self.store = SpamStore(metadata)
        self.resolver = resolver
        self.clock = clock
        self.psl = psl if psl is not None else PublicSuffixList.bundled()
        self.our_names = frozenset({hostname.lower().rstrip(".")} - {"localhost", ""})
        self.dnslists = DNSListChecker(resolver, self.settings.dnsbls) if resolver is not None else None
        self.bayes_parameters = BayesParameters(
            self.settings.unknown_word_strength,
            self.settings.unknown_word_prob,
            self.settings.min_prob_strength,
            self.settings.max_discriminators,
        )

    # -- training ---------------------------------------------------------------------
    @property
    def training_hook(self) -> Callable[[int | None, bytes, bool], defer.Deferred]:
        """``(account_id, raw_bytes, is_spam) -> Deferred``: what IMAP calls on Junk moves."""
        return self.train

    def _prepare_for_learning(self, message: bytes) -> tuple[bytes, list[bytes]]:
        analyzed = analyze_message(message, self.settings.max_scan_bytes, self.settings.max_parts, self.settings.max_urls)
        return analyzed.digest, [token_hash(t) for t in tokenize(analyzed, self.settings.max_tokens)]

    def train(self, account_id: int | None, message: bytes, is_spam: bool) -> defer.Deferred:
        """Learn ``message`` as spam or ham; fires with the LearnOutcome of ``account_id``'s database.

        With an account, that account's database learns, and the global one too unless
        ``bayes.account_training_updates_global`` is off (a user's correction helps
        everyone whose own database has not enough to speak alone).
        Learning the same message twice as the same class changes nothing; as the other
        class, it first takes back the earlier lesson.
        """

        async def go():
            digest, hashes = await threads.deferToThread(self._prepare_for_learning, message)
            if account_id is None:
                return await self.store.learn(None, digest, hashes, is_spam)
            outcome = await self.store.learn(account_id, digest, hashes, is_spam)
            if self.settings.account_training_updates_global:
                await self.store.learn(None, digest, hashes, is_spam)
            return outcome

        return defer.ensureDeferred(go())

    def train_sync(self, account_id: int | None, message: bytes, is_spam: bool) -> Any:
        """:meth:`train` for the command line (no reactor): blocks until committed."""
        digest, hashes = self._prepare_for_learning(message)
        if account_id is None:
            return self.store.learn(None, digest, hashes, is_spam, sync=True)
        outcome = self.store.learn(account_id, digest, hashes, is_spam, sync=True)
        if self.settings.account_training_updates_global:
            self.store.learn(None, digest, hashes, is_spam, sync=True)
        return outcome

    # -- checking ---------------------------------------------------------------------
    def check(self, message: bytes, context: SpamContext) -> defer.Deferred:
        """Score ``message``; fires with a :class:`SpamVerdict` (never fails on bad input)."""
        if not isinstance(message, bytes):
            return defer.fail(TypeError("message must be bytes"))
        try:
            ipaddress.ip_address(context.client_ip)
        except ValueError:
            return defer.fail(ValueError(f"client_ip is not an IP address: {context.client_ip!r}"))
        return defer.ensureDeferred(self._check(message, context))

    def _prepare(self, message: bytes, context: SpamContext, now: float) -> _Prepared:
        settings = self.settings
        analyzed = analyze_message(message, settings.max_scan_bytes, settings.max_parts, settings.max_urls)
        hashes = [token_hash(t) for t in tokenize(analyzed, settings.max_tokens)] if settings.bayes_enabled else []
        findings = static_findings(analyzed, context, now, self.our_names, self.psl, settings)
        return _Prepared(analyzed, hashes, findings)

    def _bayes_databases(self, accounts: Sequence[int]) -> dict[int | None, tuple[int, int]]:
        """Which databases may speak: the global one and accounts with enough training."""
        settings = self.settings
        usable: dict[int | None, tuple[int, int]] = {}
        totals = self.store.totals(None)
        if totals.spam >= settings.bayes_min_spam and totals.ham >= settings.bayes_min_ham and totals.spam and totals.ham:
            usable[None] = (totals.spam, totals.ham)
        for account in dict.fromkeys(accounts):
            totals = self.store.totals(account)
            if (totals.spam >= max(settings.bayes_account_min_spam, 1)
                    and totals.ham >= max(settings.bayes_account_min_ham, 1)):
                usable[account] = (totals.spam, totals.ham)
        return usable

    def _classify(self, hashes: list[bytes], databases: dict[int | None, tuple[int, int]]) -> dict[int | None, float]:
        probabilities = {}
        for account, (nspam, nham) in databases.items():
            counts = self.store.token_counts(account, hashes)
            probabilities[account], _clues = spam_probability(counts, nspam, nham, self.bayes_parameters)
        return probabilities

    def _bayes_hit(self, probability: float) -> RuleHit:
        for band in self.settings.bayes_bands:
            if probability < band.below:
                return RuleHit(band.rule, self.settings.score(band.rule), f"p={probability:.4f}")
        last = self.settings.bayes_bands[-1].rule
        return RuleHit(last, self.settings.score(last), f"p={probability:.4f}")

    async def _dns_findings(self, context: SpamContext, prepared: _Prepared) -> list[tuple[str, str]]:
        if self.dnslists is None or self.resolver is None:
            return []
        settings = self.settings
        domains: list[str] = []
        ip_literals: list[str] = []
        for url in prepared.analyzed.urls:
            if url.is_ip_literal:
                host = url.host.strip("[]")
                if host not in ip_literals and len(ip_literals) < settings.max_dnsbl_domains:
                    ip_literals.append(host)
                continue
            registered = registered_domain(url.host, self.psl)
            if registered and registered not in domains and len(domains) < settings.max_dnsbl_domains:
                domains.append(registered)
        client_ip = None if context.authenticated else context.client_ip
        lists_d = self.dnslists.check(client_ip, domains, ip_literals)
        ptr_d = self._rdns(client_ip) if client_ip else defer.succeed([])
        listed, rdns = await defer.gatherResults([lists_d, ptr_d], consumeErrors=True)
        return list(listed) + list(rdns)

    def _rdns(self, ip: str) -> defer.Deferred:
        """RFC 1912 section 2.1: every host that sends mail should have a PTR record."""
        if is_internal_address(ipaddress.ip_address(ip)):
            return defer.succeed([])
        d = self.resolver.ptr(ip)  # type: ignore[union-attr]

        def judged(names: list[str]) -> list[tuple[str, str]]:
            if not names:
                return [("RDNS_NONE", ip)]
            if _DYNAMIC_PTR.search(names[0]):
                return [("RDNS_DYNAMIC", names[0])]
            return []

        def failed(failure):
            failure.trap(DNSTemporaryError, InvalidDomainName, ValueError)
            return []

        d.addCallbacks(judged, failed)
        return d

    def _network(self, ip: str) -> str:
        address = ipaddress.ip_address(ip)
        prefix = self.settings.greylist_ipv4_prefix if address.version == 4 else self.settings.greylist_ipv6_prefix
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

    def _sender_identities(self, context: SpamContext) -> tuple[list[tuple[str, str]], bool, bool, bool]:
        """Reputation identities; whether the sender is allowlisted, IP- or domain-blocklisted.

        Sender domains count for the allowlist and reputation only when authenticated
        (SPF pass for the envelope domain, DMARC pass for the From domain): anyone can
        write any domain into MAIL FROM or From.
        """
        settings = self.settings
        address = ipaddress.ip_address(context.client_ip)
        allowed = any(address.version == net.version and address in net for net in settings.allow_networks)
        blocked_ip = any(address.version == net.version and address in net for net in settings.block_networks)
        identities = [("ip", self._network(context.client_ip))]
        auth = context.auth
        envelope_domain = None
        if "@" in context.mail_from:
            try:
                envelope_domain = normalize_domain(context.mail_from.rpartition("@")[2])
            except InvalidDomainName:
                envelope_domain = None
        from_domain = getattr(auth, "from_domain", None) if auth is not None else None
        spf_pass = auth is not None and auth.spf.result == "pass"
        dmarc_pass = auth is not None and auth.dmarc.result == "pass"
        if envelope_domain and spf_pass:
            identities.append(("domain", envelope_domain))
            if envelope_domain in settings.allow_domains or registered_domain(envelope_domain, self.psl) in settings.allow_domains:
                allowed = True
        if from_domain and dmarc_pass:
            identities.append(("from", from_domain))
            if from_domain in settings.allow_domains or registered_domain(from_domain, self.psl) in settings.allow_domains:
                allowed = True
        blocked_domain = any(
            d and (d in settings.block_domains or registered_domain(d, self.psl) in settings.block_domains)
            for d in (envelope_domain, from_domain)
        )
        return identities, allowed, blocked_ip, blocked_domain

    async def _check(self, message: bytes, context: SpamContext) -> SpamVerdict:
        settings = self.settings
        now = self.clock.seconds()
        prepared = await threads.deferToThread(self._prepare, message, context, now)
        databases = self._bayes_databases(context.accounts) if settings.bayes_enabled else {}
        bayes_d = threads.deferToThread(self._classify, prepared.hashes, databases) if databases else defer.succeed({})
        dns_d = defer.ensureDeferred(self._dns_findings(context, prepared))
        probabilities, dns_findings = await defer.gatherResults([bayes_d, dns_d], consumeErrors=True)

        identities, allowed, blocked_ip, blocked_domain = self._sender_identities(context)
        hits: list[RuleHit] = [RuleHit(rule, settings.score(rule), detail) for rule, detail in prepared.findings]
        seen = {hit.rule for hit in hits}
        for rule, detail in dns_findings:
            if rule not in seen:
                seen.add(rule)
                hits.append(RuleHit(rule, settings.score(rule), detail))
        if context.authenticated:
            hits.append(RuleHit("AUTHENTICATED", settings.score("AUTHENTICATED")))
        if allowed:
            hits.append(RuleHit("ALLOWLISTED", settings.score("ALLOWLISTED")))
        if blocked_ip:
            hits.append(RuleHit("BLOCKLISTED_IP", settings.score("BLOCKLISTED_IP"), context.client_ip))
        if blocked_domain:
            hits.append(RuleHit("BLOCKLISTED_DOMAIN", settings.score("BLOCKLISTED_DOMAIN")))
        base_score = sum(hit.score for hit in hits)

        if settings.reputation_enabled and not context.authenticated:
            for (kind, value), record in zip(identities, self.store.reputations(identities), strict=True):
                if record is not None and record.messages >= settings.reputation_min_messages:
                    bound = settings.reputation_max_score
                    score = max(-bound, min(bound, record.average * settings.reputation_factor))
                    hits.append(RuleHit(_REPUTATION_RULES[kind], round(score, 2), f"{value} avg={record.average:.2f}"))

        global_probability = probabilities.get(None)
        common = list(hits)
        if global_probability is not None:
            hits.append(self._bayes_hit(global_probability))
        verdict_hits = tuple(hits)
        score = round(sum(hit.score for hit in verdict_hits), 2)
        action = self._action(score)

        greylisted_for = 0.0
        greylist_updates: list[tuple[bytes, GreylistRecord]] = []
        if (
            settings.greylist_enabled
            and not context.authenticated
            and not allowed
            and score >= settings.greylist_min_score
            and action not in (SpamAction.REJECT, SpamAction.DISCARD)
            and context.recipients
        ):
            greylisted_for, greylist_updates = self._greylist(context, now)
            if greylisted_for > 0:
                action = SpamAction.GREYLIST

        by_account: dict[int, SpamVerdict] = {}
        for account, probability in probabilities.items():
            if account is None:
                continue
            account_hits = (*common, self._bayes_hit(probability))
            if account_hits != verdict_hits:
                account_score = round(sum(hit.score for hit in account_hits), 2)
                account_action = action if action is SpamAction.GREYLIST else self._action(account_score)
                by_account[account] = SpamVerdict(
                    account_score, account_action, account_hits, settings.spam_threshold, probability
                )

        verdict = SpamVerdict(
            score=score,
            action=action,
            hits=verdict_hits,
            required=settings.spam_threshold,
            bayes_probability=global_probability,
            by_account=MappingProxyType(by_account),
            greylisted_for=greylisted_for,
        )
        await self._record(verdict, base_score, identities, greylist_updates, context, now)
        if (
            settings.bayes_enabled
            and settings.autolearn
            and action is not SpamAction.GREYLIST
            and not context.authenticated
            and (base_score >= settings.autolearn_spam_score or base_score <= settings.autolearn_ham_score)
        ):
            await self.store.learn(None, prepared.analyzed.digest, prepared.hashes,
                                   base_score >= settings.autolearn_spam_score)
        self.log.debug("spam verdict {score} {action} for {ip}: {rules}", score=score, action=action.value,
                       ip=context.client_ip, rules=",".join(h.rule for h in verdict_hits))
        return verdict

    def _action(self, score: float) -> SpamAction:
        settings = self.settings
        if score >= settings.reject_threshold:
            return SpamAction.REJECT
        if score >= settings.discard_threshold:
            return SpamAction.DISCARD
        if score >= settings.spam_threshold:
            return SpamAction.JUNK
        return SpamAction.DELIVER

    def _triplet(self, context: SpamContext, recipient: str) -> bytes:
        """Harris' triplet: client network, envelope sender and recipient (case-folded)."""
        text = "\x00".join((self._network(context.client_ip), context.mail_from.lower(), recipient.lower()))
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _greylist(self, context: SpamContext, now: float) -> tuple[float, list[tuple[bytes, GreylistRecord]]]:
        """Seconds the client must wait (0: accept) and the records to write.

        A triplet seen for the first time (or whose retry window lapsed) is deferred; a
        retry after ``delay`` within ``retry_window`` passes; a triplet that passed passes
        again until ``pass_lifetime`` after it was last seen.  One deferred recipient
        defers the message (the triplets of the others are recorded too, so the retry
        passes for all).
        """
        settings = self.settings
        triplets = [self._triplet(context, r) for r in dict.fromkeys(context.recipients)]
        records = self.store.greylist_records(triplets)
        wait = 0.0
        updates: list[tuple[bytes, GreylistRecord]] = []
        for triplet, record in zip(triplets, records, strict=True):
            if record is not None and record.passed_at and record.passed_at + settings.greylist_pass_lifetime >= now:
                updates.append((triplet, GreylistRecord(record.first_seen, now, record.passes + 1)))
            elif record is not None and not record.passed_at and now - record.first_seen <= settings.greylist_retry_window:
                if now - record.first_seen >= settings.greylist_delay:
                    updates.append((triplet, GreylistRecord(record.first_seen, now, 1)))
                else:
                    wait = max(wait, settings.greylist_delay - (now - record.first_seen))
            else:
                updates.append((triplet, GreylistRecord(now, 0.0, 0)))
                wait = max(wait, settings.greylist_delay)
        return wait, updates

    def _record(self, verdict: SpamVerdict, base_score: float, identities: list[tuple[str, str]],
                greylist_updates: list[tuple[bytes, GreylistRecord]], context: SpamContext, now: float) -> defer.Deferred:
        """Write greylisting and reputation state in one transaction."""
        settings = self.settings
        update_reputation = (
            settings.reputation_enabled and not context.authenticated and verdict.action is not SpamAction.GREYLIST
        )
        if not greylist_updates and not update_reputation:
            return defer.succeed(None)
        learned_score = base_score + sum(
            hit.score for hit in verdict.hits if hit.rule.startswith("BAYES_")
        )
        # One outlier (GTUBE weighs 1000) must not own the average for months: a message
        # counts at most as much as one refused at the reject threshold, as rspamd clamps.
        bound = settings.reject_threshold
        learned_score = max(-bound, min(bound, learned_score))

        def fn(txn: IWriteTransaction) -> None:
            for triplet, record in greylist_updates:
                self.store.put_greylist(txn, triplet, record)
            if update_reputation:
                for kind, value in identities:
                    self.store.update_reputation(txn, kind, value, learned_score, settings.reputation_alpha, now)

        return self.store.metadata.write(fn)

    def prune(self) -> defer.Deferred:
        """Forget expired greylisting and reputation records (call it periodically)."""
        settings = self.settings
        return self.store.prune(self.clock.seconds(), settings.greylist_retry_window,
                                settings.greylist_pass_lifetime, settings.reputation_lifetime)
