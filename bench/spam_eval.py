"""Precision and recall of the spam filter on the held-out part of the project's corpus.

Trains a fresh filter (real LMDB store in a temporary directory) on three quarters of
``tests/data/spam`` (see its README for what the corpus is and is not), then checks every
held-out message through ``SpamFilter.check`` and counts a message as classified spam when
its verdict is at or above the spam threshold.  Three configurations are reported: the
whole filter, the Bayes classifier alone (probability >= 0.9), and the fixed rules alone
(no Bayes).  DNS lists, greylisting, reputation and autolearning are off: each message is
judged on its own, with no network.

    python bench/spam_eval.py [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task

from mailserve.spam.filter import SpamFilter
from mailserve.spam.message import analyze_message
from mailserve.spam.verdict import SpamContext
from mailserve.storage.lmdb_store import LMDBMetadataStore
from tests.data.spam.corpus import COUNT, SEED, generate, split

EVAL_OVERRIDES = {
    "greylist": {"enabled": False},
    "reputation": {"enabled": False},
    "bayes": {"autolearn": False, "min_spam": 1, "min_ham": 1},
}


def context_for(raw: bytes, index: int) -> SpamContext:
    sender = analyze_message(raw, max_scan_bytes=4096).header("from") or ""
    address = sender.rpartition("<")[2].rstrip(">") if "<" in sender else sender
    domain = address.rpartition("@")[2] or "unknown.example"
    return SpamContext(
        client_ip=f"203.0.113.{index % 250 + 1}",
        helo=f"mail.{domain}",
        mail_from=address,
        recipients=("user@example.net",),
    )


def rates(outcomes: list[tuple[bool, bool]]) -> dict[str, float]:
    tp = sum(1 for truth, said in outcomes if truth and said)
    fp = sum(1 for truth, said in outcomes if not truth and said)
    fn = sum(1 for truth, said in outcomes if truth and not said)
    tn = sum(1 for truth, said in outcomes if not truth and not said)
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


async def evaluate(reactor, count: int, seed: int, train_limit: int | None) -> None:
    training, held_out = split(generate(seed, count))
    if train_limit is not None:
        spam = [m for m in training if m[1]][:train_limit]
        ham = [m for m in training if not m[1]][:train_limit]
        training = spam + ham
    print(f"corpus: {len(training)} training, {len(held_out)} held out (seed {seed}, {count} of each class)")
    with tempfile.TemporaryDirectory() as directory:
        store = LMDBMetadataStore(directory, map_size=256 << 20)
        store.start()
        try:
            full = SpamFilter(store, resolver=None, hostname="mx.example.net", overrides=EVAL_OVERRIDES)
            rules_only = SpamFilter(store, resolver=None, hostname="mx.example.net",
                                    overrides={**EVAL_OVERRIDES, "bayes": {"enabled": False}})
            started = time.monotonic()
            for raw, is_spam in training:
                await full.train(None, raw, is_spam)
            trained = time.monotonic() - started
            totals = full.store.totals(None)
            print(f"trained {totals.spam} spam + {totals.ham} ham in {trained:.1f}s")
            results: dict[str, list[tuple[bool, bool]]] = {"full filter": [], "bayes only": [], "rules only": []}
            started = time.monotonic()
            for index, (raw, is_spam) in enumerate(held_out):
                context = context_for(raw, index)
                verdict = await full.check(raw, context)
                results["full filter"].append((is_spam, verdict.is_spam))
                results["bayes only"].append((is_spam, (verdict.bayes_probability or 0.0) >= 0.9))
                rules_verdict = await rules_only.check(raw, context)
                results["rules only"].append((is_spam, rules_verdict.is_spam))
            checked = time.monotonic() - started
            print(f"checked {len(held_out)} messages twice in {checked:.1f}s")
            for name, outcomes in results.items():
                r = rates(outcomes)
                print(f"{name:12s} precision={r['precision']:.4f} recall={r['recall']:.4f} "
                      f"fpr={r['false_positive_rate']:.4f} (tp={r['tp']} fp={r['fp']} fn={r['fn']} tn={r['tn']})")
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=COUNT, help="messages of each class to generate")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on only this many messages of each class (a learning curve)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(evaluate(reactor, args.count, args.seed, args.train_limit)))


if __name__ == "__main__":
    main()
