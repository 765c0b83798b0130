"""A synthetic ham/spam corpus, generated from templates with a fixed seed.

See README in this folder for what it is, how it was made and what it cannot tell you.
``generate(seed, count)`` returns ``count`` ham and ``count`` spam messages as
``(raw bytes, is_spam)`` pairs in a deterministic interleaved order; ``split`` divides them
into a training part and a held-out part (every fourth message).  Run this module to
(re)write ``ham.mbox.gz`` and ``spam.mbox.gz`` next to it.
"""

from __future__ import annotations

import gzip
import random
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

SEED = 20261201
COUNT = 600
HERE = Path(__file__).resolve().parent

FIRST = ["Alice", "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Karin", "Liam", "Maria", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Sven", "Tara", "Ugo", "Vera", "Walter", "Yusuf", "Zoe", "Mateo", "Priya", "Chen", "Olga", "Kwame", "Lena", "Tomasz"]
LAST = ["Smith", "Keller", "Novak", "Rossi", "Tanaka", "Okafor", "Dubois", "Silva", "Jensen", "Kowalski", "Haddad", "Larsen", "Moreau", "Ivanova", "Schmidt", "Garcia", "Nguyen", "Brown", "Fischer", "Costa", "Petrov", "Bauer", "Yilmaz", "Andersson"]
HAM_DOMAINS = ["example.org", "example.net", "acme-corp.example", "uni-hamburg.example", "lists.python.example", "mailbox.example", "fastmail.example", "kernel.example", "design-studio.example"]
SPAM_DOMAINS = ["best-deals-online.top", "cheap-meds-rx.xyz", "win-prizes.click", "secure-verify-login.icu", "crypto-yield.buzz", "bizmail.example", "promo-mailer.work", "hot-singles.cam"]
#: Free mail domains send both: people write from them, and spammers sign up there.
FREEMAIL = ["gmail.com", "yahoo.com", "outlook.com", "gmx.de", "proton.me"]
HAM_MAILERS = ("Mozilla Thunderbird 128.3", "Apple Mail (2.3774)", "Microsoft Outlook 16.0",
               "Roundcube Webmail/1.6.9", "Evolution 3.52", "mutt 2.2.13")
SPAM_MAILERS = ("PHPMailer 5.2.9", "The Bat! (v3.51)", "Microsoft Outlook Express 6.00.2900",
                "MailKing 2.1", "")

HAM_TOPICS = {
    "meeting": [
        "Can we move the {day} meeting to {time}? I have a conflict with the {team} review.",
        "Agenda for {day}: status of the {project} migration, the budget for {quarter}, and hiring.",
        "I booked room {room} for {time}; the dial-in link is on the calendar entry.",
        "Notes from today's call are in the shared folder. Action items: {name} drafts the {doc}, I follow up with {team}.",
        "Could you send me the slides before {day}? I'd like to read them on the train.",
    ],
    "project": [
        "The {project} build is green again after the fix to the {component} tests.",
        "I pushed a branch that refactors the {component}; review welcome, no rush before {day}.",
        "We found the cause of the timeout: the {component} retried without backoff under load.",
        "Benchmarks on the new cluster: p99 latency dropped from {n} ms to {m} ms.",
        "The release candidate for {project} {version} is tagged. Please test the upgrade path.",
        "Customer {name} reported the export bug again; I attached the log excerpt below.",
    ],
    "family": [
        "Mum asked whether we are coming on {day}. I said probably, after lunch.",
        "The kids loved the museum! Photos are in the shared album.",
        "Don't forget {name}'s birthday next week, I ordered the book already.",
        "Can you pick up bread and some tomatoes on your way home?",
        "The plumber comes {day} between {time} and noon, could you be home?",
    ],
    "list": [
        "On {day}, {name} wrote: > does anyone know why the {component} leaks file descriptors?",
        "I can reproduce it with {project} {version} on Debian; the patch in the tracker fixes it for me.",
        "+1 to the proposal, but the {component} API should stay backwards compatible for one release.",
        "The documentation says the default is {n}, but the code uses {m}. Which one is right?",
        "Thanks, applied to the main branch. This will be in the next point release.",
    ],
    "receipt": [
        "Thank you for your order #{order}. Your total was ${price} including tax.",
        "Your package with {item} has shipped and should arrive on {day}. Track it in your account.",
        "This is a receipt for your payment of ${price} to {company}. No action is needed.",
        "Your subscription to {company} renews on the {n}th. You can change your plan in your account settings.",
        "Your password was changed on {day}. If this was you, you can ignore this message.",
    ],
    "promo": [
        "Our winter sale starts {day}: save {pct}% on the {item} you looked at, this week only.",
        "Members get free shipping on orders over ${price}. Limited time offer, while stocks last.",
        "Thanks for being a customer! Here is a {pct}% discount code for your next order.",
        "New arrivals: the {item} is back in stock. Order now, it sold out in {n} days last time.",
    ],
    "newsletter": [
        "This month at {company}: new features in the {component}, a case study and our {quarter} roadmap.",
        "Join our free webinar on {day} about scaling the {component}. Seats are limited.",
        "Read our engineering blog post about how we cut {project} build times in half.",
        "Community spotlight: {name} maintains the {component} plugin used by thousands of teams.",
        "You are receiving this because you signed up at {company}. Manage your preferences anytime.",
    ],
}

SPAM_TOPICS = {
    "pharma": [
        "Buy {drug} online without prescription, lowest prices guaranteed!",
        "Generic {drug} only ${price} per pill, discreet worldwide shipping.",
        "Our licensed online pharmacy ships {drug} and {drug2} overnight. Order now and save {pct}%.",
        "Men's health breakthrough: {drug} works in {n} minutes. Satisfaction guaranteed.",
    ],
    "advance_fee": [
        "I am {title} {name}, a banker with {bank}. I have a proposal involving {amount} million US dollars.",
        "My late client died without next of kin, leaving a deposit of {amount} million dollars.",
        "I need a trustworthy foreign partner to help transfer the funds. You will receive {pct}% of the total.",
        "Kindly reply with your full name, phone number and bank details so we can proceed confidentially.",
        "This transaction is 100% risk free and legal. Please keep it strictly confidential.",
    ],
    "phishing": [
        "We detected unusual sign-in activity on your {company} account. Verify your identity within 24 hours.",
        "Your account has been suspended due to a billing problem. Update your payment information now.",
        "Your mailbox has exceeded its storage limit. Click below to validate your account or lose your messages.",
        "A payment of ${price} is pending. If you did not authorize this, confirm your details immediately.",
        "For your security, we have limited access to your account until you complete verification.",
    ],
    "prize": [
        "Congratulations! Your email address has won ${amount},000 in our international lottery.",
        "You have been selected to receive a free {item}. Claim your prize before it expires!",
        "Final notice: your reward of ${price} is waiting. Click to claim now.",
        "You are our lucky visitor today! Answer {n} questions and win a brand new {item}.",
    ],
    "crypto": [
        "Turn ${price} into ${amount},000 with our automated crypto trading robot.",
        "Guaranteed returns of {pct}% per week. Join thousands of investors earning passive income.",
        "The next bitcoin is here. Early investors made {n}x their money. Don't miss out!",
        "Exclusive presale: buy tokens now before the price explodes. Limited spots available.",
    ],
    "dating": [
        "Hi dear, I saw your profile and I want to know you better. Write to me at my private email.",
        "Lonely tonight? Thousands of singles in your area are waiting to chat.",
        "I am {name}, {n} years old, and I am looking for a serious relationship with a kind man.",
    ],
    "seo": [
        "Is your website on the first page of Google? We can get you there in {n} days.",
        "We noticed your site has {n} errors hurting your ranking. Reply for a free audit.",
        "Our team builds high quality backlinks at unbeatable prices. Order a package today.",
    ],
    "outreach": [
        "Hi {first}, I hope this finds you well. I wanted to follow up on my note from {day} about your {team} team.",
        "We help companies like {company} reduce {component} costs by {pct}%. Do you have 15 minutes on {day}?",
        "I noticed you are hiring for {team} roles. We have pre-vetted developers available at ${price} per hour.",
        "Just bumping this to the top of your inbox. Let me know if someone else handles {team} at your company.",
    ],
    "invoice": [
        "Please find attached the invoice #{order} for services rendered. Payment is overdue.",
        "Your order #{order} could not be delivered. Open the attached document for details.",
        "Attached is the remittance advice for the transfer of ${price}. Please confirm receipt.",
    ],
}

FILLS = {
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"],
    "time": ["9:30", "10:00", "11:15", "14:00", "15:30", "16:45"],
    "team": ["platform", "design", "finance", "legal", "infra", "mobile", "data"],
    "project": ["Orion", "Atlas", "Hermes", "Lighthouse", "Kestrel", "Nimbus", "Quartz"],
    "quarter": ["Q1", "Q2", "Q3", "Q4"],
    "room": ["B12", "C3", "A-204", "Fjord", "Summit", "Harbor"],
    "doc": ["proposal", "report", "spec", "contract", "summary"],
    "component": ["scheduler", "parser", "cache", "importer", "exporter", "resolver", "indexer"],
    "version": ["2.4.1", "3.0.0", "1.9.7", "5.2", "0.18.3"],
    "item": ["laptop", "headphones", "coffee", "grinder", "backpack", "smartphone", "bicycle"],
    "company": ["Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"],
    "drug": ["Viagra", "Cialis", "Xanax", "Tramadol", "Valium", "Levitra", "Ambien"],
    "title": ["Mr.", "Dr.", "Barrister", "Prince", "Mrs."],
    "bank": ["the Central Bank", "a private bank in Lagos", "an investment bank in London"],
}
HAM_SIGNOFF = ["Best,", "Cheers,", "Thanks,", "Regards,", "See you,", "Love,", "--"]
SPAM_CLOSING = ["Best regards,", "Yours faithfully,", "Sincerely,", "Customer Service Team", ""]


def _fill(rng: random.Random, template: str) -> str:
    values = {key: rng.choice(options) for key, options in FILLS.items()}
    values["drug2"] = rng.choice(FILLS["drug"])
    values["name"] = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    values["first"] = rng.choice(FIRST)
    values.update(
        n=rng.randint(2, 90), m=rng.randint(2, 90), pct=rng.choice((10, 15, 20, 30, 40, 70, 80)),
        price=f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}", amount=rng.randint(2, 45),
        order=rng.randint(100000, 999999),
    )
    return template.format(**values)


def _person(rng: random.Random, domains: tuple[str, ...] | list[str]) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{rng.randint(1, 99)}")).lower()
    return f"{first} {last}", f"{local}@{rng.choice(domains)}"


def _date(rng: random.Random, base: datetime) -> str:
    return format_datetime(base - timedelta(minutes=rng.randint(1, 60 * 24 * 60)))


def _html(paragraphs: list[str], links: list[tuple[str, str]], rng: random.Random, hidden: str = "",
          image: bool = False) -> str:
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    for text, href in links:
        body += f'<p><a href="{href}">{text}</a></p>\n'
    if image:
        body += f'<img src="https://cdn.{rng.choice(SPAM_DOMAINS)}/banner{rng.randint(1, 9)}.jpg" width="600">\n'
    if hidden:
        body += f'<div style="display:none">{hidden}</div>\n'
    style = rng.choice(("", '<style>p{font-family:Arial}</style>', '<meta charset="utf-8">'))
    return f"<html><head>{style}</head><body>\n{body}</body></html>\n"


def _message(headers: list[tuple[str, str]], text: str | None, html: str | None, rng: random.Random,
             attachment: tuple[str, bytes] | None = None) -> bytes:
    lines = [f"{name}: {value}" for name, value in headers]
    boundary = f"=_{rng.getrandbits(64):016x}"
    if attachment is not None:
        import base64

        lines += ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{boundary}"', "",
                  f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "", text or "",
                  f"--{boundary}", f'Content-Type: application/octet-stream; name="{attachment[0]}"',
                  "Content-Transfer-Encoding: base64",
                  f'Content-Disposition: attachment; filename="{attachment[0]}"', "",
                  base64.encodebytes(attachment[1]).decode().strip(), f"--{boundary}--", ""]
    elif text is not None and html is not None:
        lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', "",
                  f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "", text,
                  f"--{boundary}", "Content-Type: text/html; charset=utf-8", "", html, f"--{boundary}--", ""]
    elif html is not None:
        lines += ["MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8", "", html]
    else:
        lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", text or ""]
    # RFC 5322 section 2.3: lines end in CRLF, also inside the bodies written with "\n".
    return "\n".join(lines).replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def make_ham(rng: random.Random, base: datetime) -> bytes:
    topic = rng.choice(list(HAM_TOPICS))
    name, address = _person(rng, HAM_DOMAINS if rng.random() < 0.75 else FREEMAIL)
    to_name, to_address = _person(rng, HAM_DOMAINS)
    sentences = [_fill(rng, s) for s in rng.sample(HAM_TOPICS[topic], k=min(len(HAM_TOPICS[topic]), rng.randint(2, 4)))]
    subject_words = sentences[0].split()[: rng.randint(3, 7)]
    subject = " ".join(subject_words).rstrip(".,:?!")
    if topic in ("list", "meeting") and rng.random() < 0.5:
        subject = "Re: " + subject
    domain = address.split("@")[1]
    headers = [
        ("From", f"{name} <{address}>"), ("To", f"{to_name} <{to_address}>"), ("Subject", subject),
        ("Date", _date(rng, base)), ("Message-ID", f"<{rng.getrandbits(48):x}.{rng.randint(1, 9999)}@{domain}>"),
    ]
    if rng.random() < 0.7:
        headers.append(("User-Agent" if rng.random() < 0.5 else "X-Mailer", rng.choice(HAM_MAILERS)))
    greeting = rng.choice((f"Hi {to_name.split()[0]},", f"Hello {to_name.split()[0]},", "Hi all,", ""))
    text = "\n\n".join(filter(None, [greeting, " ".join(sentences), rng.choice(HAM_SIGNOFF) + "\n" + name.split()[0]]))
    if topic == "list":
        headers += [("List-Id", f"<{rng.choice(FILLS['project']).lower()}-dev.lists.python.example>"),
                    ("Precedence", "list")]
    if topic in ("newsletter", "receipt", "promo"):
        company = rng.choice(FILLS["company"])
        site = f"https://www.{company.lower()}.example"
        headers[0] = ("From", f"{company} <{rng.choice(('news', 'no-reply', 'orders', 'billing'))}@{company.lower()}.example>")
        headers.append(("List-Unsubscribe", f"<{site}/unsubscribe?u={rng.getrandbits(32):x}>"))
        links = [("View your account", f"{site}/account"), ("Unsubscribe", f"{site}/unsubscribe")]
        if topic == "newsletter":
            links.insert(0, ("Read more", f"{site}/blog/{rng.randint(100, 999)}"))
        html = _html(sentences, links, rng)
        return _message(headers, text if rng.random() < 0.8 else None, html, rng)
    if rng.random() < 0.15:
        text += f"\n\nSee https://{rng.choice(('github.com', 'docs.python.org', 'wiki.example.org'))}/{rng.choice(FILLS['project']).lower()}"
    return _message(headers, text, None, rng)


def make_spam(rng: random.Random, base: datetime) -> bytes:
    topic = rng.choice(list(SPAM_TOPICS))
    draw = rng.random()
    name, address = _person(rng, SPAM_DOMAINS if draw < 0.5 else FREEMAIL if draw < 0.75 else HAM_DOMAINS)
    _to_name, to_address = _person(rng, HAM_DOMAINS)
    sentences = [_fill(rng, s) for s in rng.sample(SPAM_TOPICS[topic], k=min(len(SPAM_TOPICS[topic]), rng.randint(2, 4)))]
    subject = " ".join(sentences[0].split()[: rng.randint(3, 7)]).rstrip(".,")
    if rng.random() < 0.25:
        subject = subject.upper()
    if rng.random() < 0.2:
        subject += "!!!"
    headers = [("From", f"{name} <{address}>"), ("To", to_address if rng.random() < 0.7 else "undisclosed-recipients:;"),
               ("Subject", subject)]
    if rng.random() < 0.85:
        headers.append(("Date", _date(rng, base)))
    if rng.random() < 0.8:
        headers.append(("Message-ID", f"<{rng.getrandbits(64):x}@{address.split('@')[1]}>"))
    mailer = rng.choice(SPAM_MAILERS)
    if mailer:
        headers.append(("X-Mailer", mailer))
    if topic == "advance_fee":
        headers.append(("Reply-To", f"{name.split()[0].lower()}{rng.randint(1, 999)}@{rng.choice(('gmail.com', 'yahoo.com', 'outlook.com'))}"))
    target = f"https://{rng.choice(SPAM_DOMAINS)}/{rng.choice(('claim', 'verify', 'order', 'login', 'offer'))}?id={rng.getrandbits(32):x}"
    if rng.random() < 0.2:
        target = rng.choice(("http://bit.ly/", "https://tinyurl.com/")) + f"{rng.getrandbits(30):x}"
    closing = rng.choice(SPAM_CLOSING)
    text = "\n\n".join(filter(None, [rng.choice(("Dear friend,", "Dear customer,", "Hello,", "")), " ".join(sentences), closing]))
    if topic == "invoice" and rng.random() < 0.6:
        return _message(headers, text, None, rng, attachment=(f"invoice_{rng.randint(1000, 9999)}.{rng.choice(('zip', 'exe', 'pdf.scr', 'html'))}", rng.randbytes(96)))
    if topic == "phishing":
        company = rng.choice(FILLS["company"])
        shown = f"https://www.{company.lower()}.example/account" if rng.random() < 0.5 else "Verify now"
        html = _html(sentences, [(shown, target)], rng, hidden=" ".join(_fill(rng, s) for s in HAM_TOPICS["family"][:2]) if rng.random() < 0.3 else "")
        return _message(headers, None if rng.random() < 0.6 else text, html, rng)
    if rng.random() < 0.55:
        html = _html(sentences, [(rng.choice(("Click here", "Order now", "Claim your prize", "Learn more")), target)], rng,
                     image=rng.random() < 0.4)
        return _message(headers, None if rng.random() < 0.5 else text, html, rng)
    return _message(headers, text + f"\n\n{target}\n", None, rng)


def generate(seed: int = SEED, count: int = COUNT) -> list[tuple[bytes, bool]]:
    """``count`` ham and ``count`` spam messages, interleaved, deterministic for ``seed``."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    corpus = []
    for _ in range(count):
        corpus.append((make_ham(rng, base), False))
        corpus.append((make_spam(rng, base), True))
    return corpus


def split(corpus: list[tuple[bytes, bool]]) -> tuple[list[tuple[bytes, bool]], list[tuple[bytes, bool]]]:
    """Training part and held-out part: every fourth ham/spam pair is held out (25%)."""
    training = [item for index, item in enumerate(corpus) if (index // 2) % 4 != 0]
    held_out = [item for index, item in enumerate(corpus) if (index // 2) % 4 == 0]
    return training, held_out


def to_mbox(messages: list[bytes]) -> bytes:
    """mboxrd (RFC 4155): ``From `` separator lines, body lines starting with ``>*From `` quoted."""
    out = []
    for raw in messages:
        body = raw.replace(b"\r\n", b"\n")
        quoted = b"\n".join((b">" + line) if line.lstrip(b">").startswith(b"From ") else line for line in body.split(b"\n"))
        out.append(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n" + quoted.rstrip(b"\n") + b"\n\n")
    return b"".join(out)


def write_files(directory: Path = HERE) -> None:
    corpus = generate()
    for label, is_spam in (("ham", False), ("spam", True)):
        data = to_mbox([raw for raw, spam in corpus if spam == is_spam])
        with gzip.GzipFile(directory / f"{label}.mbox.gz", "wb", mtime=0) as out:
            out.write(data)


if __name__ == "__main__":
    write_files(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
