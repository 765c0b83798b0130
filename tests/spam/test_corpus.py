"""The generated corpus: reproducible from its generator, and learnable by the filter."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest_twisted

from mailserve.spam.filter import SpamFilter
from mailserve.spam.verdict import SpamContext
from tests.data.spam import corpus

ROOT = Path(__file__).resolve().parent.parent.parent


def test_committed_files_are_exactly_what_the_generator_writes(tmp_path):
    corpus.write_files(tmp_path)
    for name in ("ham.mbox.gz", "spam.mbox.gz"):
        generated = gzip.decompress((tmp_path / name).read_bytes())
        committed = gzip.decompress((corpus.HERE / name).read_bytes())
        assert generated == committed, name


def test_generation_is_deterministic_and_split_is_balanced():
    first = corpus.generate(seed=7, count=40)
    assert first == corpus.generate(seed=7, count=40)
    assert first != corpus.generate(seed=8, count=40)
    training, held_out = corpus.split(first)
    assert len(held_out) == 20 and sum(is_spam for _m, is_spam in held_out) == 10
    assert not {m for m, _s in held_out} & {m for m, _s in training}
    assert all(b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"") for raw, _s in first)


@pytest_twisted.ensureDeferred
async def test_filter_learns_the_corpus(metadata):
    training, held_out = corpus.split(corpus.generate(seed=11, count=120))
    spam_filter = SpamFilter(metadata, hostname="mx.example.net", overrides={
        "greylist": {"enabled": False}, "reputation": {"enabled": False},
        "bayes": {"autolearn": False, "min_spam": 20, "min_ham": 20}})
    for raw, is_spam in training:
        await spam_filter.train(None, raw, is_spam)
    outcomes = []
    for index, (raw, is_spam) in enumerate(held_out):
        verdict = await spam_filter.check(raw, SpamContext(f"203.0.113.{index + 1}", "mail.example.org",
                                                           "sender@example.org", ("user@example.net",)))
        outcomes.append((is_spam, verdict.is_spam))
    true_positives = sum(1 for truth, said in outcomes if truth and said)
    false_positives = sum(1 for truth, said in outcomes if not truth and said)
    spam_total = sum(1 for truth, _said in outcomes if truth)
    assert false_positives == 0
    assert true_positives / spam_total >= 0.95


def test_bench_prints_precision_and_recall():
    import subprocess

    result = subprocess.run([sys.executable, str(ROOT / "bench" / "spam_eval.py"), "--count", "80"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "full filter  precision=" in result.stdout and "recall=" in result.stdout
