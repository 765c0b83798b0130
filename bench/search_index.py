"""Benchmark the ``ISearchIndex`` adapters on the same mail-like corpus.

Generates a seeded corpus of mail-like documents (From/To/Cc, a subject, a ~2 KB body and a
header block, words drawn from a Zipf-distributed vocabulary as natural text is), indexes it
with each adapter in batches the way the ``SearchIndexer`` does (``add`` then ``commit``),
then runs the same queries against each and reports indexing throughput and query latency.
The adapters must return identical results for every query; the run fails if they do not.

    PYTHONPATH=. python bench/search_index.py [--docs 5000] [--batch 500] [--queries 300] [--seed 1]

(run from the top of the source tree, or with mailserve installed).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Self

from mailserve.storage.tantivy_index import TantivySearchIndex
from mailserve.storage.whoosh_index import WhooshSearchIndex

ADAPTERS: dict[str, Callable[[str], object]] = {
    "whoosh": WhooshSearchIndex,
    "tantivy": TantivySearchIndex,
}
QUERY_FIELDS = ("from", "to", "subject", "body", "text")

FIRST_NAMES = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "yolanda",
    "zoë",
    "josé",
    "björn",
    "anaïs",
    "łukasz",
    "søren",
)
LAST_NAMES = (
    "smith",
    "jones",
    "taylor",
    "brown",
    "williams",
    "wilson",
    "johnson",
    "davies",
    "robinson",
    "wright",
    "thompson",
    "evans",
    "walker",
    "white",
    "roberts",
    "green",
    "hall",
    "wood",
    "jackson",
    "clarke",
    "müller",
    "garcía",
    "dubois",
    "nowak",
    "rossi",
)
DOMAINS = (
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "lists.example.org",
    "corp.example",
    "university.example",
    "shop.example",
    "bank.example",
    "news.example",
)
SYLLABLES = (
    "ka",
    "ri",
    "to",
    "na",
    "mi",
    "ko",
    "sa",
    "lu",
    "pe",
    "de",
    "an",
    "er",
    "in",
    "on",
    "us",
    "or",
    "al",
    "el",
    "is",
    "at",
    "en",
    "ta",
    "ve",
    "lo",
    "ma",
    "ne",
    "si",
    "ro",
    "che",
    "qua",
    "tri",
    "pla",
    "str",
    "ost",
    "ing",
    "ment",
    "tion",
    "able",
    "ful",
)


@dataclass
class Corpus:
    """The generated documents and the pieces queries are drawn from."""

    documents: list[dict]
    vocabulary: list[str]
    cumulative_weights: list[float]
    accounts: int


def make_vocabulary(rng: random.Random, size: int) -> list[str]:
    """``size`` distinct pronounceable words; their order is their Zipf rank."""
    words: dict[str, None] = {}
    while len(words) < size:
        length = rng.choice((1, 2, 2, 2, 3, 3, 4))
        words["".join(rng.choice(SYLLABLES) for _ in range(length))] = None
    return list(words)


def make_corpus(
    seed: int, count: int, accounts: int, vocabulary_size: int = 20_000
) -> Corpus:
    """``count`` mail-like documents spread over ``accounts`` accounts, reproducible from ``seed``."""
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, vocabulary_size)
    # Zipf's law with s = 1.07, close to what English mail text shows.
    cumulative_weights = list(
        accumulate(1 / rank**1.07 for rank in range(1, vocabulary_size + 1))
    )

    def words(n: int) -> list[str]:
        return rng.choices(vocabulary, cum_weights=cumulative_weights, k=n)

    def address() -> str:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        return f"{first.title()} {last.title()} <{first}.{last}@{rng.choice(DOMAINS)}>"

    def sentence() -> str:
        text = " ".join(words(rng.randint(5, 16)))
        return text[0].upper() + text[1:] + rng.choice(".....?!:")

    documents = []
    for number in range(count):
        sender = address()
        to = ", ".join(address() for _ in range(rng.randint(1, 3)))
        cc = (
            ", ".join(address() for _ in range(rng.randint(0, 2)))
            if rng.random() < 0.4
            else ""
        )
        subject = rng.choice(("", "", "Re: ", "Fwd: ", "RE: ")) + " ".join(
            words(rng.randint(3, 9))
        )
        paragraphs, length, target = [], 0, rng.randint(1500, 2500)
        while length < target:
            paragraph = " ".join(sentence() for _ in range(rng.randint(2, 6)))
            paragraphs.append(paragraph)
            length += len(paragraph) + 2
        body = "\n\n".join(paragraphs)
        message_id = f"<{rng.getrandbits(64):016x}.{number}@{rng.choice(DOMAINS)}>"
        headers = "\n".join(
            (
                (
                    f"Received: from mx{rng.randint(1, 9)}.{rng.choice(DOMAINS)} "
                    f"([192.0.2.{rng.randint(1, 254)}]) by mail.example.org with ESMTPS id "
                    f"{rng.getrandbits(48):012X}"
                ),
                f"From: {sender}",
                f"To: {to}",
                *((f"Cc: {cc}",) if cc else ()),
                f"Subject: {subject}",
                (
                    f"Date: Mon, {rng.randint(1, 28)} Oct 2024 {rng.randint(0, 23):02}:"
                    f"{rng.randint(0, 59):02}:00 +0000"
                ),
                f"Message-ID: {message_id}",
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8",
            )
        )
        documents.append(
            {
                "account": number % accounts,
                "message": number // accounts + 1,
                "from": sender,
                "to": to,
                "cc": cc,
                "subject": subject,
                "body": body,
                "headers": headers,
            }
        )
    return Corpus(documents, vocabulary, cumulative_weights, accounts)


def make_queries(
    corpus: Corpus, seed: int, per_field: int
) -> list[tuple[int, str, str]]:
    """``per_field`` ``(account, field, text)`` queries per field of ``QUERY_FIELDS``.

    Most take one or two words from a real document of the account (so they match
    something); the rest take words from the whole vocabulary by frequency, as users
    searching for a half-remembered word do, and often match nothing or very much.
    """
    rng = random.Random(seed + 1)
    queries = []
    for field_name in QUERY_FIELDS:
        for _ in range(per_field):
            document = rng.choice(corpus.documents)
            if rng.random() < 0.75:
                source = (
                    document["body" if field_name == "text" else field_name]
                    or document["subject"]
                )
                tokens = [token.strip("<>,.?!:") for token in source.split()]
                tokens = [token for token in tokens if token]
                start = rng.randrange(len(tokens))
                text = " ".join(tokens[start : start + rng.choice((1, 1, 2))])
            else:
                text = " ".join(
                    rng.choices(
                        corpus.vocabulary,
                        cum_weights=corpus.cumulative_weights,
                        k=rng.choice((1, 2)),
                    )
                )
            queries.append((document["account"], field_name, text))
    return queries


@dataclass
class Result:
    """What one adapter measured."""

    name: str
    index_seconds: float = 0.0
    documents: int = 0
    disk_bytes: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    answers: list[frozenset] = field(default_factory=list)
    heartbeat_lateness: list[float] = field(default_factory=list)

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.index_seconds

    def mean_ms(self, field_name: str) -> float:
        return statistics.fmean(self.latencies[field_name]) * 1000

    def p99_ms(self, field_name: str) -> float:
        return percentile(self.latencies[field_name], 0.99) * 1000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Heartbeat:
    """A thread that sleeps 1 ms at a time and records how late it wakes up.

    While the indexer works in a worker thread, this is how long the reactor thread would
    wait to run: Python code in the worker holds the GIL up to the switch interval (5 ms),
    native code that releases the GIL does not delay it at all.
    """

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            time.sleep(0.001)
            self.lateness.append(time.perf_counter() - started - 0.001)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def run_adapter(name: str, workdir: str, corpus: Corpus, queries, batch: int) -> Result:
    """Index the corpus in batches, then time every query, with one adapter."""
    path = os.path.join(workdir, name)
    index = ADAPTERS[name](path)
    result = Result(name, documents=len(corpus.documents))
    try:
        with Heartbeat() as heartbeat:
            started = time.perf_counter()
            for first in range(0, len(corpus.documents), batch):
                index.add(corpus.documents[first : first + batch])
                index.commit()
            result.index_seconds = time.perf_counter() - started
        result.heartbeat_lateness = heartbeat.lateness
        result.disk_bytes = directory_size(path)
        for account, field_name, text in queries:
            started = time.perf_counter()
            found = index.search(account, field_name, text)
            result.latencies.setdefault(field_name, []).append(
                time.perf_counter() - started
            )
            result.answers.append(frozenset(found))
    finally:
        index.close()
    return result


def report(results: list[Result], queries) -> str:
    lines = []
    header = (
        f"{'adapter':<9} {'docs/s':>8} {'index s':>8} {'disk MB':>8}"
        f"  1 ms timer late while indexing: {'p99 ms':>7} {'max ms':>7}"
    )
    lines.append(header)
    for result in results:
        lateness = result.heartbeat_lateness or [0.0]
        lines.append(
            f"{result.name:<9} {result.documents_per_second:>8.0f} {result.index_seconds:>8.2f} "
            f"{result.disk_bytes / 1e6:>8.1f}  {'':<32}"
            f"{percentile(lateness, 0.99) * 1000:>7.2f} {max(lateness) * 1000:>7.2f}"
        )
    lines.append("")
    lines.append(
        f"{'query ms':<9} "
        + " ".join(f"{r.name + ' mean':>13} {r.name + ' p99':>12}" for r in results)
    )
    for field_name in QUERY_FIELDS:
        cells = " ".join(
            f"{r.mean_ms(field_name):>13.3f} {r.p99_ms(field_name):>12.3f}"
            for r in results
        )
        lines.append(f"{field_name:<9} {cells}")
    hits = [len(answer) for answer in results[0].answers]
    lines.append("")
    lines.append(
        f"{len(queries)} queries, mean {statistics.fmean(hits):.1f} hits, "
        f"{sum(1 for h in hits if h == 0)} with none"
    )
    if len(results) == 2:
        first, second = results
        lines.append("")
        lines.append(f"ratio {second.name}/{first.name}:")
        lines.append(
            f"  indexing throughput  x{second.documents_per_second / first.documents_per_second:.1f}"
        )
        for field_name in QUERY_FIELDS:
            lines.append(
                f"  {field_name:<8} query mean  x{first.mean_ms(field_name) / second.mean_ms(field_name):.1f} faster,"
                f" p99 x{first.p99_ms(field_name) / second.p99_ms(field_name):.1f} faster"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--queries", type=int, default=300, help="queries per field")
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--adapters", default=",".join(ADAPTERS))
    options = parser.parse_args(argv)
    names = options.adapters.split(",")
    unknown = [name for name in names if name not in ADAPTERS]
    if unknown:
        parser.error(f"unknown adapters: {', '.join(unknown)}")

    started = time.perf_counter()
    corpus = make_corpus(options.seed, options.docs, options.accounts)
    queries = make_queries(corpus, options.seed, options.queries)
    body_kb = statistics.fmean(len(d["body"].encode()) for d in corpus.documents) / 1024
    print(
        f"{len(corpus.documents)} documents (mean body {body_kb:.1f} KiB) over {options.accounts} "
        f"accounts, batches of {options.batch}, generated in {time.perf_counter() - started:.1f} s"
    )
    with tempfile.TemporaryDirectory(prefix="search-bench-") as workdir:
        results = [
            run_adapter(name, workdir, corpus, queries, options.batch) for name in names
        ]
    print(report(results, queries))
    for result in results[1:]:
        differing = sum(
            a != b for a, b in zip(results[0].answers, result.answers, strict=True)
        )
        if differing:
            print(
                f"ERROR: {result.name} and {results[0].name} disagree on {differing} queries"
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
