"""The Bayes arithmetic and the learning store over a real LMDB metadata store."""

from __future__ import annotations

import math

import pytest
import pytest_twisted

from mailserve.core import keys
from mailserve.spam.bayes import BayesParameters, chi2q, spam_probability, token_probability
from mailserve.spam.store import SpamStore

PARAMS = BayesParameters()


def test_chi2q_matches_closed_forms():
    # 2 degrees of freedom: Q = exp(-x/2).
    for x2 in (0.5, 2.0, 10.0):
        assert chi2q(x2, 2) == pytest.approx(math.exp(-x2 / 2))
    # 4 degrees of freedom: Q = exp(-x/2) (1 + x/2).
    assert chi2q(6.0, 4) == pytest.approx(math.exp(-3) * 4)
    assert chi2q(0.0, 10) == 1.0
    with pytest.raises(ValueError):
        chi2q(1.0, 3)


def test_token_probability_shrinks_rare_tokens_towards_prior():
    once = token_probability(1, 0, 100, 100, PARAMS)
    often = token_probability(50, 0, 100, 100, PARAMS)
    assert 0.5 < once < often < 1.0
    assert token_probability(0, 0, 100, 100, PARAMS) == 0.5
    # Ratios, not raw counts: a token in 10% of spam and 10% of ham is neutral.
    assert token_probability(10, 100, 100, 1000, PARAMS) == pytest.approx(0.5)


def test_combined_probability():
    spammy = [(40, 1)] * 30
    hammy = [(1, 40)] * 30
    assert spam_probability(spammy, 50, 50, PARAMS)[0] > 0.99
    assert spam_probability(hammy, 50, 50, PARAMS)[0] < 0.01
    mixed, clues = spam_probability(spammy + hammy, 50, 50, PARAMS)
    assert 0.3 < mixed < 0.7 and clues == 60
    assert spam_probability([(3, 3), (0, 0)], 50, 50, PARAMS) == (0.5, 0)
    _probability, clues = spam_probability([(40, 1)] * 500, 50, 50, PARAMS)
    assert clues == PARAMS.max_discriminators


@pytest_twisted.ensureDeferred
async def test_learning_is_idempotent_and_reversible(metadata):
    store = SpamStore(metadata)
    tokens = [b"\x00" * 7 + bytes([i]) for i in range(5)]
    outcome = await store.learn(7, b"digest-1", tokens + tokens[:2], True)
    assert (outcome.status, outcome.tokens) == ("learned", 5)
    assert store.totals(7).spam == 1 and store.totals(7).ham == 0
    assert store.token_counts(7, tokens[:1]) == [(1, 0)]
    assert (await store.learn(7, b"digest-1", tokens, True)).status == "already"
    assert store.totals(7).spam == 1
    assert (await store.learn(7, b"digest-1", tokens, False)).status == "relearned"
    assert (store.totals(7).spam, store.totals(7).ham) == (0, 1)
    assert store.token_counts(7, tokens) == [(0, 1)] * 5
    assert store.learned_as(7, b"digest-1") is False
    # The global database and other accounts are separate.
    assert store.totals(None).ham == 0 and store.token_counts(8, tokens[:1]) == [(0, 0)]
    assert await store.forget(7, b"digest-1", tokens) is True
    assert store.token_counts(7, tokens) == [(0, 0)] * 5
    assert store.totals(7).ham == 0
    assert store.learned_as(7, b"digest-1") is None
    # Zero counts are deleted, not kept as dead weight.
    assert metadata.read(lambda txn: list(txn.scan(keys.spam_tokens_prefix(7)))) == []


@pytest_twisted.ensureDeferred
async def test_account_bayes_lives_under_the_account_prefix(metadata):
    store = SpamStore(metadata)
    await store.learn(3, b"d", [b"12345678"], True)
    under = metadata.read(lambda txn: [k for k, _v in txn.scan(keys.account_prefix(3))])
    assert keys.spam_token(3, b"12345678") in under


def test_sync_learning_for_the_command_line(tmp_path):
    from mailserve.storage.lmdb_store import LMDBMetadataStore

    store = LMDBMetadataStore(str(tmp_path / "m"), map_size=16 << 20)
    try:
        spam_store = SpamStore(store)
        assert spam_store.learn(None, b"d", [b"abcdefgh"], False, sync=True).status == "learned"
        assert spam_store.totals(None).ham == 1
    finally:
        store.close()
