"""Property tests: the parsers of hostile input fail only in their documented way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserve.mailauth.dkim import KeyTable, _verify_all
from mailserve.mailauth.dmarc import (
    DMARCRecordError,
    FromDomainError,
    from_domain_of,
    parse_dmarc_record,
)
from mailserve.mailauth.results import (
    split_header_section,
    strip_authentication_results,
)

header_lines = st.lists(
    st.one_of(
        st.from_regex(rb"\A[A-Za-z-]{1,20}: [ -~]{0,40}\r?\n\Z"),
        st.from_regex(rb"\A[ \t][ -~]{0,40}\r?\n\Z"),
        st.just(b"Authentication-Results: mx.example.net; spf=pass\r\n"),
    ),
    max_size=12,
)


@given(header_lines, st.binary(max_size=200))
def test_split_header_section_loses_nothing(lines, body):
    message = b"".join(lines) + b"\r\n" + body
    fields, rest = split_header_section(message)
    assert b"".join(fields) + rest == message


@given(header_lines, st.binary(max_size=200))
def test_strip_removes_only_our_fields(lines, body):
    message = b"".join(lines) + b"\r\n" + body
    stripped = strip_authentication_results(message, "mx.example.net")
    fields, rest = split_header_section(stripped)
    assert rest.endswith(body)
    assert not any(f.lower().startswith(b"authentication-results: mx.example.net;") for f in fields)


@given(st.text(max_size=300))
def test_dmarc_record_parser_raises_only_record_error(text):
    try:
        record = parse_dmarc_record("v=DMARC1; " + text)
    except DMARCRecordError:
        return
    assert record.policy in ("none", "quarantine", "reject")
    assert 0 <= record.percent <= 100


@given(st.text(max_size=200))
def test_from_domain_raises_only_from_error(text):
    try:
        domain = from_domain_of(text)
    except FromDomainError:
        return
    assert domain and domain == domain.lower()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_dkim_verifier_never_crashes_on_garbage_signatures(junk):
    message = b"DKIM-Signature: " + junk.replace(b"\n", b" ") + b"\r\nFrom: a@example.org\r\n\r\nbody\r\n"
    results = _verify_all(message, KeyTable(), 1024)
    for result in results:
        assert result.result in ("permerror", "fail", "temperror", "neutral")
