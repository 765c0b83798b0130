"""Authenticated Received Chain (RFC 8617): validating and extending the chain.

A forwarder (mailing list, alias expansion) breaks SPF and often DKIM; ARC lets each hop
record what it saw and seal it, so the final receiver can trust the first hop's results.
dkimpy implements the chain rules; as for DKIM, the key records of every ARC set are
fetched asynchronously first and dkimpy runs in a thread against that table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet import defer, threads

from mailserve.dns import Resolver
from mailserve.mailauth.dkim import (
    KeyTable,
    MalformedMessageError,
    QuietDKIMLogger,
    dkimpy_private_key,
    fetch_keys,
    header_section,
    oversigned_headers,
    parse_header_fields,
)

__all__ = ["ARCResult", "ARCSealError", "ARCSetResult", "arc_seal", "arc_seal_async", "verify_arc"]

#: RFC 8617 section 4.2.1: instance values range from 1 to 50.
MAX_ARC_INSTANCES = 50
_ARC_HEADERS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")


class ARCSealError(ValueError):
    """The message cannot be sealed (bad key, no From, malformed auth results)."""


@dataclass(frozen=True)
class ARCSetResult:
    """What one ARC set (one hop) says and whether its signatures verify."""

    instance: int
    ams_domain: str
    ams_selector: str
    ams_valid: bool
    seal_domain: str
    seal_selector: str
    seal_valid: bool
    chain_status: str


@dataclass(frozen=True)
class ARCResult:
    """The chain validation status (RFC 8617 section 5.2): ``none``, ``pass`` or ``fail``.

    ``instances`` is the highest instance seen; ``sets`` lists each hop, newest first.
    ``oldest_pass`` is the lowest instance whose AMS still verifies (section 5.2,
    step 7), which tells how far back the message is unchanged.
    """

    result: str
    instances: int = 0
    reason: str = ""
    sets: tuple[ARCSetResult, ...] = ()
    oldest_pass: int = 0


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace")


def _arc_key_names(message: bytes) -> tuple[set[str], int]:
    """Key names the chain needs and the highest instance number (runs in a thread)."""
    headers = parse_header_fields(message)
    names: set[str] = set()
    highest = 0
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _ARC_HEADERS:
            continue
        match = re.search(rb"(?:^|;)\s*i\s*=\s*(\d+)", value)
        if match:
            highest = max(highest, int(match.group(1)))
        if lowered == b"arc-authentication-results":
            continue
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            continue
        if tags.get(b"s") and tags.get(b"d"):
            names.add(f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}")
    return names, highest


def _validate(message: bytes, table: KeyTable, minkey: int) -> ARCResult:
    """Runs in a thread: dkimpy's chain validation against the prefetched keys."""
    verifier = dkimpy.ARC(message, logger=QuietDKIMLogger(), minkey=minkey)
    try:
        status, details, reason = verifier.verify(dnsfunc=table)
    except dkimpy.DKIMException as exc:
        return ARCResult("fail", reason=str(exc))
    sets = tuple(
        ARCSetResult(
            instance=int(d.get("instance", 0)),
            ams_domain=_text(d.get("ams-domain")),
            ams_selector=_text(d.get("ams-selector")),
            ams_valid=bool(d.get("ams-valid")),
            seal_domain=_text(d.get("as-domain")),
            seal_selector=_text(d.get("as-selector")),
            seal_valid=bool(d.get("as-valid")),
            chain_status=_text(d.get("cv")),
        )
        for d in details
    )
    highest = max((s.instance for s in sets), default=0)
    oldest_pass = 0
    for arc_set in sorted(sets, key=lambda s: s.instance, reverse=True):
        if not arc_set.ams_valid:
            break
        oldest_pass = arc_set.instance
    if status == dkimpy.CV_None:
        return ARCResult("none", 0, reason)
    if status == dkimpy.CV_Pass:
        return ARCResult("pass", highest, "", sets, oldest_pass)
    # dkimpy returns None for a chain an earlier hop already declared failed.
    return ARCResult("fail", highest, reason or "chain failed", sets, oldest_pass)


async def _verify(resolver: Resolver, message: bytes, minkey: int) -> ARCResult:
    try:
        names, highest = await threads.deferToThread(_arc_key_names, message)
    except MalformedMessageError as exc:
        has_arc = re.search(rb"(?im)^arc-seal\s*:", header_section(message))
        return ARCResult("fail" if has_arc else "none", reason=str(exc))
    if highest == 0:
        return ARCResult("none")
    if highest > MAX_ARC_INSTANCES:
        return ARCResult("fail", highest, f"more than {MAX_ARC_INSTANCES} ARC sets")
    table = await fetch_keys(resolver, names)
    result = await threads.deferToThread(_validate, message, table, minkey)
    if result.result == "fail" and table.temporary:
        lookups = ", ".join(sorted(table.temporary))
        return ARCResult(
            "fail", result.instances, f"{result.reason} (key lookup failed: {lookups})",
            result.sets, result.oldest_pass,
        )
    return result


def verify_arc(resolver: Resolver, message: bytes, minkey: int = 1024) -> defer.Deferred:
    """Validate the ARC chain of ``message``; fires with an :class:`ARCResult`."""
    return defer.ensureDeferred(_verify(resolver, message, minkey))


def _authserv_id(auth_results: str) -> str:
    authserv_id = auth_results.split(";", 1)[0].strip().split()[0] if auth_results.strip() else ""
    if not authserv_id:
        raise ARCSealError("Authentication-Results value has no authserv-id")
    return authserv_id


def arc_seal(
    message: bytes,
    auth_results: str,
    domain: str,
    selector: str,
    key: bytes | str,
    timestamp: int | None = None,
) -> bytes:
    """The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) to prepend.

    ``auth_results`` is the value of the Authentication-Results header field this hop
    wrote (``authserv-id; spf=...; dkim=...; arc=...``); its ``arc=`` result becomes the
    seal's ``cv=`` (RFC 8617 section 5.1.1), so it must include ``arc=`` whenever the
    message arrived with ARC sets.  ``key`` is an RSA private key in PEM (RFC 8617 only
    defines rsa-sha256).  Returns ``b""`` when the chain cannot be extended (an earlier
    hop reported ``cv=fail`` without a result here, or too many instances).  CPU-bound:
    call from a thread on the reactor side.
    """
    if isinstance(key, str):
        key = key.encode("ascii")
    try:
        private_key = dkimpy_private_key(key, "rsa-sha256")
    except ValueError as exc:
        raise ARCSealError(str(exc)) from exc
    authserv_id = _authserv_id(auth_results)
    value = " ".join(auth_results.replace("\r\n", "\n").split("\n")).strip()
    stamped = b"Authentication-Results: " + value.encode("utf-8") + b"\r\n" + message
    try:
        include = [h for h in oversigned_headers(message) if h != b"authentication-results"]
        sealer = dkimpy.ARC(stamped, logger=QuietDKIMLogger(), signature_algorithm=b"rsa-sha256")
        arc_set = sealer.sign(
            selector.encode("ascii"),
            domain.encode("ascii"),
            private_key,
            authserv_id.encode("ascii"),
            include_headers=include,
            timestamp=timestamp,
        )
    except dkimpy.ParameterError as exc:
        if "Maximum instance" in str(exc):
            return b""
        raise ARCSealError(str(exc)) from exc
    except (dkimpy.DKIMException, ValueError, IndexError) as exc:
        raise ARCSealError(str(exc)) from exc
    return b"".join(arc_set)


def arc_seal_async(message: bytes, *args, **kwargs) -> defer.Deferred:
    """:func:`arc_seal` in a thread (RSA signing is CPU work)."""
    return threads.deferToThread(arc_seal, message, *args, **kwargs)
