"""Upload-time checks: unknown names, missing require, argument shapes."""

from __future__ import annotations

import pytest

from mailserve.sieve import (
    SIEVE_CAPABILITY,
    SieveLimits,
    SieveSyntaxError,
    compile_script,
)


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ('fileinto "x";', 1, 1, 'require "fileinto"'),
        ('require "fileinto";\nfrobnicate;', 2, 1, "unknown command 'frobnicate'"),
        ('if frob { keep; }', 1, 4, "unknown test 'frob'"),
        ('keep :bogus;', 1, 6, "unknown tag ':bogus'"),
        ('require "nonexistent";', 1, 1, 'unsupported extension "nonexistent"'),
        ('keep;\nrequire "fileinto";', 2, 1, "require must come before"),
        ('if header :is :contains "a" "b" { keep; }', 1, 15, "conflicts with ':is'"),
        ('if header "a" :is "b" { keep; }', 1, 15, "after positional"),
        ('if header :is "a" { keep; }', 1, 4, "takes 2 positional"),
        ('redirect ["a@b.c", "d@e.f"];', 1, 10, "single string"),
        ('if size 100 { keep; }', 1, 4, ":over or :under"),
        ('elsif true { keep; }', 1, 1, "without a preceding if"),
        ('if true { keep; } else { keep; } else { keep; }', 1, 34, "without a preceding if"),
        ('if true keep;', 1, 9, "takes no test"),
        ('if not keep { stop; }', 1, 8, "is a command, not a test"),
        ('keep { }', 1, 1, "takes no block"),
        ('if anyof true { keep; }', 1, 4, "needs a test list"),
        ('if header :comparator "i;bogus" "a" "b" { keep; }', 1, 4, "unknown comparator"),
        ('if header :comparator "i;ascii-numeric" "a" "1" { keep; }', 1, 4, "comparator-i;ascii-numeric"),
        ('require "relational";\nif header :count "bigger" "a" "1" { keep; }', 2, 4, "relational operator"),
        ('if header :regex "a" "b" { keep; }', 1, 11, 'require "regex"'),
        ('require "regex";\nif header :regex "a" "(unclosed" { keep; }', 2, 4, "invalid regular expression"),
        ('require "date";\nif date "date" "fortnight" "1" { keep; }', 2, 4, "unknown date part"),
        ('require "date";\nif date :zone "CET" "date" "year" "1" { keep; }', 2, 4, "invalid time zone"),
        ('redirect "not an address";', 1, 1, "invalid redirect address"),
        ('require "variables";\nset "1bad" "x";', 2, 1, "invalid variable name"),
        ('require ["include"];\nglobal "x";', 2, 1, 'require "variables"'),
        ('require "index";\nif header :last "a" "b" { keep; }', 2, 4, ":last requires :index"),
        ('if header :is "bad name" "x" { keep; }', 1, 4, "invalid header name"),
        ('require "envelope";\nif envelope "cc" "x" { keep; }', 2, 4, "unsupported envelope part"),
        ('require ["encoded-character", "fileinto"];\nfileinto "${unicode:D800}";', 2, 10, "invalid unicode"),
        ('require ["variables", "fileinto"];\nfileinto "${com.example.x}";', 2, 10, "unknown namespace 'com'"),
        ('require ["variables"];\nif header :is "a" "${global.x}" { keep; }', 2, 19, "unknown namespace 'global'"),
    ],
)
def test_upload_errors(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(SieveSyntaxError) as raised:
        compile_script(text)
    assert fragment in raised.value.message, raised.value
    assert (raised.value.line, raised.value.column) == (line, column), raised.value


def test_script_size_limit() -> None:
    with pytest.raises(SieveSyntaxError, match="larger than"):
        compile_script("keep;" * 100, SieveLimits(max_script_size=50))


def test_capability_string_lists_every_extension() -> None:
    names = SIEVE_CAPABILITY.split()
    for name in (
        "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags", "vacation",
        "vacation-seconds", "body", "variables", "relational", "comparator-i;ascii-numeric",
        "subaddress", "copy", "include", "date", "index", "editheader", "mailbox", "duplicate",
        "spamtest", "spamtestplus", "virustest", "regex",
    ):  # fmt: skip
        assert name in names
    # Every advertised extension can really be required.
    compile_script(f"require {['x'][:0] or names!r};".replace("'", '"'))


def test_implied_extensions() -> None:
    compile_script('require "spamtestplus";\nif spamtest :percent "50" { keep; }')
    compile_script('require "vacation-seconds";\nvacation :seconds 60 "x";')
