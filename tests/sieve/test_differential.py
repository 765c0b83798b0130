"""Differential tests: every script/message pair under tests/data/sieve runs
through our interpreter and through Pigeonhole's sieve-test; the actions
(stores with flags, redirects, reject, discard, vacation, failure) must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailserve.sieve import SieveEnvironment, SieveMessage, compile_script, run
from tests.sieve.pigeonhole import (
    ENVELOPE_FROM,
    ENVELOPE_TO,
    outcome_of,
    run_pigeonhole,
    sieve_test_binary,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "sieve"
CASES = sorted(path.stem for path in CORPUS.glob("*.sieve"))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    for name in CASES:
        assert (CORPUS / f"{name}.eml").exists(), name


def test_sieve_test_is_installed() -> None:
    # Fails (never skips) when Pigeonhole is missing: see tests/sieve/README.
    assert Path(sieve_test_binary()).exists()


def _message_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("name", CASES)
def test_same_actions_as_pigeonhole(name: str) -> None:
    script_text = (CORPUS / f"{name}.sieve").read_text(encoding="utf-8")
    raw = (CORPUS / f"{name}.eml").read_bytes()
    ours = outcome_of(
        run(
            compile_script(script_text),
            SieveMessage(raw, ENVELOPE_FROM, ENVELOPE_TO),
            SieveEnvironment(mailbox_exists=lambda mailbox: True),
        )
    )
    theirs, report = run_pigeonhole(script_text, raw)
    assert ours == theirs, f"{name}: ours={ours}\npigeonhole={theirs}\n{report}\n{_message_text(raw)}"
