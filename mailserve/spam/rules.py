"""Header, content, greeting and authentication rules: what a message says about itself.

Each check returns the names of the rules that fired (with a short detail for the log);
their weights come from ``rules.toml``.  These rules need no DNS and no store, so they run
in the worker thread together with message analysis.  The RFC a rule rests on is cited
where the rule is implemented.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from collections.abc import Iterable

from mailserve.dns import InvalidDomainName, normalize_domain
from mailserve.mailauth.psl import PublicSuffixList
from mailserve.spam.message import (
    AnalyzedMessage,
    domain_scripts,
    executable_attachment,
    homoglyph_skeleton,
)
from mailserve.spam.settings import SpamSettings
from mailserve.spam.verdict import SpamContext

__all__ = ["Finding", "registered_domain", "static_findings"]

Finding = tuple[str, str]

#: RFC 5322 section 3.6.4: msg-id = "<" id-left "@" id-right ">".
_MESSAGE_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_DOMAIN_IN_TEXT = re.compile(r"(?i)\b(?:https?://)?((?:[a-z0-9\u00a1-\uffff-]{1,63}\.)+[a-z\u00a1-\uffff]{2,63})\b")
_BRACKETED_IP = re.compile(r"\[(\d{1,3}(?:\.\d{1,3}){3})\]")
#: Hours: SpamAssassin's DATE_IN_FUTURE_12_24 / DATE_IN_PAST_96_XX boundaries.
FUTURE_TOLERANCE = 12 * 3600
PAST_TOLERANCE = 96 * 3600


def registered_domain(host: str, psl: PublicSuffixList) -> str | None:
    """The organisational domain of ``host`` (RFC 7489 section 3.2), ``None`` if unusable."""
    try:
        return psl.organizational_domain(host)
    except (InvalidDomainName, UnicodeError, ValueError):
        return None


def _address_domain(address: str) -> str | None:
    _local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or not domain:
        return None
    try:
        return normalize_domain(domain)
    except InvalidDomainName:
        return None


def _homoglyph(host: str) -> tuple[bool, bool]:
    """(looks like an ASCII name written in other scripts, mixes scripts in one label)."""
    spoof = mixed = False
    for label in host.split("."):
        if label.isascii():
            continue
        scripts = domain_scripts(label)
        if len(scripts) > 1:
            mixed = True
        if homoglyph_skeleton(label).isascii():
            spoof = True
    return spoof, mixed


def header_findings(message: AnalyzedMessage, now: float, our_names: frozenset[str], psl: PublicSuffixList,
                    settings: SpamSettings) -> Iterable[Finding]:
    # RFC 5322 section 3.6: Date and From are required, exactly once.
    date = message.header("date")
    if date is None:
        yield "MISSING_DATE", ""
    else:
        try:
            sent = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            yield "INVALID_DATE", date[:60]
        else:
            if sent > now + FUTURE_TOLERANCE:
                yield "DATE_IN_FUTURE", date[:60]
            elif sent < now - PAST_TOLERANCE:
                yield "DATE_IN_PAST", date[:60]
    message_id = message.header("message-id")
    if message_id is None:
        yield "MISSING_MESSAGE_ID", ""
    elif not _MESSAGE_ID.match(message_id.strip()):
        yield "INVALID_MESSAGE_ID", message_id[:60]
    froms = message.header_all("from")
    from_domain = None
    if not froms:
        yield "MISSING_FROM", ""
    elif len(froms) > 1:
        yield "MULTIPLE_FROM", ""
    else:
        parsed = email.utils.getaddresses([froms[0]])
        addresses = [addr for _name, addr in parsed if addr]
        from_domain = _address_domain(addresses[0]) if len(addresses) == 1 else None
        if from_domain is None:
            yield "INVALID_FROM", froms[0][:60]
        else:
            display = parsed[0][0][:300]  # bounded: the pattern below is quadratic on long runs
            for found in re.findall(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)", display):
                if found.lower() != from_domain:
                    yield "FROM_NAME_HAS_ADDRESS", display[:60]
                    break
            spoof, mixed = _homoglyph(from_domain.encode("ascii").decode("idna") if "xn--" in from_domain else from_domain)
            if spoof or mixed:
                yield "FROM_HOMOGLYPH_DOMAIN", from_domain
            if from_domain.rsplit(".", 1)[-1] in settings.suspicious_tlds:
                yield "FROM_SUSPICIOUS_TLD", from_domain
            reply_to = message.header("reply-to")
            if reply_to:
                reply_addresses = [addr for _n, addr in email.utils.getaddresses([reply_to]) if addr]
                reply_domain = _address_domain(reply_addresses[0]) if reply_addresses else None
                if (
                    reply_domain
                    and reply_domain in settings.freemail_domains
                    and reply_addresses[0].lower() != addresses[0].lower()
                    and registered_domain(reply_domain, psl) != registered_domain(from_domain, psl)
                ):
                    yield "REPLYTO_FREEMAIL_DIFFERS", reply_domain
    if not message.header_all("to") and not message.header_all("cc") and not message.header_all("bcc"):
        yield "MISSING_TO", ""
    subject = message.header("subject")
    if subject is None:
        yield "MISSING_SUBJECT", ""
    else:
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 10 and all(c.isupper() for c in letters):
            yield "SUBJECT_ALL_CAPS", ""
        if subject.count("!") >= 3 or "!!" in subject:
            yield "SUBJECT_EXCLAMATIONS", ""
    if message.header("mime-version") is None and any(t != "text/plain" for t in message.content_types):
        # RFC 2045 section 4: MIME content requires MIME-Version.
        yield "MISSING_MIME_VERSION", ""
    if message.header("list-unsubscribe") is not None:
        yield "BULK_UNSUBSCRIBE", ""
    yield from _received_findings(message, our_names)


def _received_findings(message: AnalyzedMessage, our_names: frozenset[str]) -> Iterable[Finding]:
    """Trace fields (RFC 5321 section 4.4): each needs a ``;`` and a date-time.

    A Received field naming *this* server in its ``by`` clause can only be our own trace
    on top; anywhere else it was written by the sender to fake a trusted path.
    """
    received = message.header_all("received")
    malformed = forged = False
    for index, value in enumerate(received[:50]):
        clause, semicolon, stamp = value.rpartition(";")
        if not semicolon or email.utils.parsedate_tz(stamp.strip()) is None:
            malformed = True
        by = re.search(r"\bby\s+([^\s;()]+)", clause, re.IGNORECASE)
        if by and by.group(1).lower().rstrip(".") in our_names and index > 0:
            forged = True
        for literal in _BRACKETED_IP.findall(clause):
            try:
                ipaddress.IPv4Address(literal)
            except ValueError:
                forged = True
    if forged:
        yield "FORGED_RECEIVED", ""
    if malformed:
        yield "RECEIVED_MALFORMED", ""


def body_findings(message: AnalyzedMessage, psl: PublicSuffixList, settings: SpamSettings) -> Iterable[Finding]:
    if message.has_gtube:
        # The Generic Test for Unsolicited Bulk Email (SpamAssassin): always spam.
        yield "GTUBE", ""
    visible_html = message.html_text.strip()
    if message.html_parts and not message.text_parts:
        yield "HTML_ONLY", ""
        if message.images and len(visible_html) < 200:
            yield "HTML_IMAGE_ONLY", f"{message.images} images, {len(visible_html)} characters"
    if message.hidden_text > 20:
        yield "HTML_HIDDEN_TEXT", f"{message.hidden_text} hidden characters"
    if message.forms:
        yield "HTML_FORM", ""
    if message.text_parts and message.html_parts:
        # multipart/alternative parts must be the same content (RFC 2046 section 5.1.4).
        text_words = set(re.findall(r"\w{3,}", message.text.lower()))
        html_words = set(re.findall(r"\w{3,}", visible_html.lower()))
        if len(text_words) > 5 and len(html_words) > 5:
            overlap = len(text_words & html_words) / len(text_words | html_words)
            if overlap < 0.3:
                yield "HTML_TEXT_MISMATCH", f"overlap {overlap:.2f}"
    if not message.body_text.strip() and not message.attachments:
        yield "EMPTY_BODY", ""
    for name in message.attachments:
        if executable_attachment(name):
            yield "EXECUTABLE_ATTACHMENT", name
            break
    fired: set[str] = set()
    for url in message.urls:
        host = url.host
        if url.is_ip_literal:
            fired.add("URL_IP_LITERAL")
            continue
        if url.has_userinfo:
            fired.add("URL_USERINFO")
        spoof, mixed = _homoglyph(host)
        if spoof:
            fired.add("URL_HOMOGLYPH_DOMAIN")
        elif mixed:
            fired.add("URL_MIXED_SCRIPT")
        try:
            ascii_host = normalize_domain(host)
        except InvalidDomainName:
            continue
        if ascii_host in settings.shorteners:
            fired.add("URL_SHORTENER")
        if ascii_host.rsplit(".", 1)[-1] in settings.suspicious_tlds:
            fired.add("URL_SUSPICIOUS_TLD")
        registered = registered_domain(ascii_host, psl)
        if registered in settings.block_domains or ascii_host in settings.block_domains:
            fired.add("BLOCKLISTED_URL")
        if url.anchor_text:
            shown = _DOMAIN_IN_TEXT.search(url.anchor_text[:300])
            if shown and "." in shown.group(1):
                shown_domain = registered_domain(shown.group(1).lower(), psl)
                if shown_domain and registered and shown_domain != registered and "." in shown_domain:
                    # The link text names one site and the link goes to another: phishing.
                    fired.add("URL_TEXT_MISMATCH")
    if len(message.urls) > 50:
        fired.add("URL_MANY")
    for rule in sorted(fired):
        yield rule, ""


def helo_findings(context: SpamContext, our_names: frozenset[str]) -> Iterable[Finding]:
    """RFC 5321 section 4.1.1.1 / 4.1.3: the EHLO argument is an FQDN or an address literal."""
    helo = context.helo.strip().lower().rstrip(".")
    if not helo or context.authenticated:
        return
    try:
        ipaddress.ip_address(helo)
    except ValueError:
        pass
    else:
        yield "HELO_BARE_IP", helo
        return
    if helo.startswith("["):
        return
    if helo in ("localhost", "localhost.localdomain"):
        yield "HELO_LOCALHOST", helo
    elif helo in our_names:
        yield "HELO_CLAIMS_OUR_NAME", helo
    elif "." not in helo:
        yield "HELO_NOT_FQDN", helo


def envelope_findings(context: SpamContext, message: AnalyzedMessage) -> Iterable[Finding]:
    if len(context.recipients) > 50:
        yield "RCPT_COUNT_HIGH", str(len(context.recipients))
    if context.mail_from == "" and not context.authenticated:
        # RFC 5321 section 4.5.5: the null reverse-path is for notifications (DSNs, MDNs).
        is_report = any(t in ("multipart/report", "message/delivery-status", "message/disposition-notification")
                        for t in message.content_types)
        if not is_report and message.header("auto-submitted") is None:
            yield "NULL_SENDER_NOT_BOUNCE", ""


def auth_findings(auth: object | None) -> Iterable[Finding]:
    """SPF (RFC 7208 section 2.6), DKIM (RFC 6376 section 6.1), DMARC (RFC 7489) and ARC."""
    if auth is None:
        return
    spf = getattr(auth, "spf", None)
    if spf is not None:
        name = {
            "pass": "SPF_PASS", "fail": "SPF_FAIL", "softfail": "SPF_SOFTFAIL", "neutral": "SPF_NEUTRAL",
            "none": "SPF_NONE", "temperror": "SPF_TEMPERROR", "permerror": "SPF_PERMERROR",
        }.get(spf.result)
        if name:
            yield name, spf.domain
    helo = getattr(auth, "spf_helo", None)
    if helo is not None and helo.result == "fail":
        yield "SPF_HELO_FAIL", helo.domain
    dkim = tuple(getattr(auth, "dkim", ()) or ())
    results = {d.result for d in dkim}
    if "pass" in results:
        yield "DKIM_VALID", ",".join(d.domain for d in dkim if d.result == "pass")
    elif results & {"fail", "permerror", "neutral", "policy"}:
        yield "DKIM_INVALID", ""
    elif "temperror" in results:
        yield "DKIM_TEMPERROR", ""
    else:
        yield "DKIM_NONE", ""
    dmarc = getattr(auth, "dmarc", None)
    if dmarc is not None:
        if dmarc.result == "pass":
            yield "DMARC_PASS", dmarc.from_domain
        elif dmarc.result == "fail":
            policy = dmarc.policy
            yield {"reject": "DMARC_REJECT", "quarantine": "DMARC_QUARANTINE"}.get(policy, "DMARC_POLICY_NONE_FAIL"), dmarc.from_domain
        elif dmarc.result == "none":
            yield "DMARC_NONE", dmarc.from_domain
    arc = getattr(auth, "arc", None)
    if arc is not None:
        if arc.result == "pass":
            yield "ARC_PASS", f"i={arc.instances}"
        elif arc.result == "fail":
            yield "ARC_FAIL", arc.reason[:60]


def static_findings(message: AnalyzedMessage, context: SpamContext, now: float, our_names: frozenset[str],
                    psl: PublicSuffixList, settings: SpamSettings) -> list[Finding]:
    """Every rule that fires without DNS or stored state, each at most once, in order."""
    findings: dict[str, str] = {}
    for source in (
        header_findings(message, now, our_names, psl, settings),
        body_findings(message, psl, settings),
        helo_findings(context, our_names),
        envelope_findings(context, message),
        auth_findings(context.auth),
    ):
        for rule, detail in source:
            findings.setdefault(rule, detail)
    return list(findings.items())
