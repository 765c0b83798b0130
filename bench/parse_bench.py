"""Benchmark ``mailserve.core.mime.parse_message`` on generated messages of several shapes.

Parsing runs once per message at ingest (in a worker thread), so its throughput bounds how
fast the server can accept mail.  For each shape this builds a seeded set of messages with
the ``email`` package, parses every one, and prints messages/s and MB/s; it also times
``to_wire`` + msgpack (what is stored) and ``extract_text`` (what the indexer reads).

    PYTHONPATH=. python bench/parse_bench.py [--count 2000] [--seed 1] [--shape NAME ...]

(run from the top of the source tree, or with mailserve installed).
"""

from __future__ import annotations

import argparse
import email.policy
import random
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import msgpack

from mailserve.core.mime import extract_text, parse_message

WORDS = (
    "meeting", "report", "budget", "quarter", "lunch", "project", "deadline", "review",
    "invoice", "travel", "schedule", "update", "draft", "customer", "server", "release",
    "holiday", "agenda", "minutes", "contract", "offer", "team", "question", "answer",
    "thanks", "regards", "tomorrow", "today", "week", "month", "please", "attached",
)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _text(rng: random.Random, size: int) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        line = _sentence(rng, rng.randint(5, 12))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def _headers(message, rng: random.Random, index: int) -> None:
    message["From"] = f"Sender {index} <sender{index}@example.org>"
    message["To"] = ", ".join(f"User {n} <user{n}@example.net>" for n in range(rng.randint(1, 5)))
    message["Subject"] = "Re: " + _sentence(rng, 6)
    message["Date"] = "Tue, 2 Jan 2024 10:30:00 +0100"
    message["Message-ID"] = f"<{index}.{rng.random()}@example.org>"
    message["References"] = " ".join(f"<ref{n}@example.org>" for n in range(rng.randint(0, 8)))


def plain(rng: random.Random, index: int) -> bytes:
    message = EmailMessage()
    _headers(message, rng, index)
    message.set_content(_text(rng, rng.randint(500, 4000)))
    return message.as_bytes(policy=email.policy.SMTP)


def alternative(rng: random.Random, index: int) -> bytes:
    text = _text(rng, rng.randint(1000, 6000))
    markup = "<html><body>" + "".join(f"<p>{line}</p>" for line in text.splitlines()) + "</body></html>"
    message = MIMEMultipart("alternative", _subparts=[
        MIMEText(text, "plain", "utf-8"), MIMEText(markup, "html", "utf-8"),
    ])
    _headers(message, rng, index)
    return message.as_bytes(policy=email.policy.SMTP)


def attachment(rng: random.Random, index: int) -> bytes:
    payload = rng.randbytes(rng.randint(20_000, 200_000))
    message = MIMEMultipart("mixed", _subparts=[
        MIMEText(_text(rng, 800), "plain", "utf-8"), MIMEApplication(payload, "pdf"),
    ])
    _headers(message, rng, index)
    return message.as_bytes(policy=email.policy.SMTP)


def _tree(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.3:
        if rng.random() < 0.7:
            return MIMEText(_text(rng, rng.randint(100, 1500)), rng.choice(["plain", "html"]), "utf-8")
        return MIMEApplication(rng.randbytes(rng.randint(100, 3000)))
    if rng.random() < 0.2:
        inner = _tree(rng, depth - 1)
        inner["Subject"] = "forwarded"
        return MIMEMessage(inner)
    children = [_tree(rng, depth - 1) for _ in range(rng.randint(1, 4))]
    return MIMEMultipart(rng.choice(["mixed", "alternative", "related"]), _subparts=children)


def nested(rng: random.Random, index: int) -> bytes:
    message = _tree(rng, 5)
    _headers(message, rng, index)
    return message.as_bytes(policy=email.policy.SMTP)


SHAPES: dict[str, Callable[[random.Random, int], bytes]] = {
    "plain": plain,
    "alternative": alternative,
    "attachment": attachment,
    "nested": nested,
}


def run(shape: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    messages = [SHAPES[shape](rng, index) for index in range(count)]
    total_bytes = sum(len(m) for m in messages)
    parts = 0

    start = time.perf_counter()
    parsed = [parse_message(m) for m in messages]
    parse_seconds = time.perf_counter() - start
    for result in parsed:
        parts += sum(1 for _ in result.structure.walk())

    start = time.perf_counter()
    stored = sum(len(msgpack.packb(p.to_wire(), use_bin_type=True)) for p in parsed)
    wire_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for raw, result in zip(messages, parsed, strict=True):
        extract_text(raw, result)
    text_seconds = time.perf_counter() - start

    megabytes = total_bytes / 1e6
    print(
        f"{shape:12} {count:6d} msgs {megabytes:8.1f} MB {parts / count:5.1f} parts/msg | "
        f"parse {count / parse_seconds:8.0f} msg/s {megabytes / parse_seconds:7.1f} MB/s | "
        f"wire {stored / count:6.0f} B/msg {count / wire_seconds:8.0f} msg/s | "
        f"extract_text {count / text_seconds:7.0f} msg/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per shape")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES),
                        help="shape to run (repeatable; default all)")
    args = parser.parse_args(argv)
    for shape in args.shape or list(SHAPES):
        run(shape, args.count, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
