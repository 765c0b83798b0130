"""Naive-Bayes spam probability with Robinson's token estimates and Fisher's combining.

Graham's "A Plan for Spam" (2002) scored messages by the probabilities of their most
telling words; Gary Robinson improved it twice: a token seen only a few times gets a
probability pulled towards a neutral prior, ``f(w) = (s*x + n*p(w)) / (s + n)``, and the
chosen tokens are combined with Fisher's chi-squared test instead of a product, which
measures how *unlikely* the clues are under "all random" for spam and for ham separately.
SpamBayes showed this gives few confident mistakes and an honest "unsure" middle; the
constants below are SpamBayes' defaults, tunable in ``rules.toml``.

This module is pure arithmetic over counts; the counts come from
:class:`mailserve.spam.store.SpamStore`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BayesParameters", "chi2q", "spam_probability", "token_probability"]


@dataclass(frozen=True)
class BayesParameters:
    unknown_word_strength: float = 0.45
    unknown_word_prob: float = 0.5
    min_prob_strength: float = 0.1
    max_discriminators: int = 150


def chi2q(x2: float, degrees: int) -> float:
    """P(chi-squared with ``degrees`` (even) degrees of freedom >= ``x2``).

    The series for even degrees of freedom, as in SpamBayes' ``chi2Q``.
    """
    if degrees % 2:
        raise ValueError("degrees of freedom must be even")
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, degrees // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def token_probability(
    spam_count: int, ham_count: int, nspam: int, nham: int, params: BayesParameters
) -> float:
    """Robinson's f(w): the spam probability of one token, shrunk towards the prior."""
    spam_ratio = spam_count / nspam if nspam else 0.0
    ham_ratio = ham_count / nham if nham else 0.0
    if spam_ratio + ham_ratio == 0:
        return params.unknown_word_prob
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam_count + ham_count
    s = params.unknown_word_strength
    return (s * params.unknown_word_prob + n * p) / (s + n)


def spam_probability(
    counts: Iterable[tuple[int, int]], nspam: int, nham: int, params: BayesParameters
) -> tuple[float, int]:
    """The chi-squared combined spam probability of a message and the number of clues used.

    ``counts`` are ``(spam, ham)`` counts of the message's tokens.  Only tokens at least
    ``min_prob_strength`` away from 0.5 count, the ``max_discriminators`` strongest of them.
    With no clues the answer is 0.5 ("unsure").
    """
    clues = []
    for spam_count, ham_count in counts:
        if spam_count == 0 and ham_count == 0:
            continue
        prob = token_probability(spam_count, ham_count, nspam, nham, params)
        distance = abs(prob - 0.5)
        if distance >= params.min_prob_strength:
            clues.append((distance, prob))
    if not clues:
        return 0.5, 0
    clues.sort(reverse=True)
    chosen = [min(max(prob, 1e-6), 1 - 1e-6) for _distance, prob in clues[: params.max_discriminators]]
    n = len(chosen)
    ham_evidence = sum(math.log(prob) for prob in chosen)
    spam_evidence = sum(math.log(1.0 - prob) for prob in chosen)
    spam_score = 1.0 - chi2q(-2.0 * spam_evidence, 2 * n)
    ham_score = 1.0 - chi2q(-2.0 * ham_evidence, 2 * n)
    return (spam_score - ham_score + 1.0) / 2.0, n
