"""Mail authentication and the spam filter on real mail, end to end.

Three real servers on 127.0.0.1 share one authoritative DNS fixture (``[dns] nameservers``):

* ``mx``: the receiving server (``mail.example.test``; smtp, imap) for ``example.test``;
  its outbound queue relays to ``sink``, so a forward to a remote address can be inspected;
* ``origin``: a second mailserve (``mail.origin.test``; submission) whose users' mail
  is DKIM-signed and relayed to ``mx``, as one organisation sends to another;
* ``sink``: a minimal SMTP server that keeps what it receives.

smtplib and imaplib talk to them from worker threads, so the reactor keeps serving.  The DNS
fixture listens on port 53 of a private loopback address so OpenDKIM's ``opendkim-testmsg``
(which only uses the system resolver) can be pointed at it too.
"""

from __future__ import annotations

import imaplib
import os
import random
import smtplib
import time

import dkim
import pytest
import pytest_twisted
from twisted.internet import defer, protocol, task
from twisted.internet import reactor as global_reactor
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineReceiver

from mailserve.config import Config
from mailserve.mailauth.dkim import generate_dkim_key
from mailserve.mailauth.keystore import DKIMKeyStore
from tests.dnsfixture import DNSFixtureServer
from tests.e2e.harness import FAST_AUTH, LISTENERS, TestServer, add_user
from tests.mailauth.test_dkim_opendkim import OPENDKIM_TESTMSG, lf, run_with_resolver

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


# -- the capturing SMTP server --------------------------------------------------------------------
class _SinkSession(LineReceiver):
    """Just enough RFC 5321 to take a message: no extensions, one transaction at a time."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        self.data: list[bytes] | None = None
        self.sendLine(b"220 sink.far.test ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                self.factory.received.append(b"\r\n".join(self.data) + b"\r\n")
                self.data = None
                self.sendLine(b"250 2.0.0 kept")
                waiting, self.factory.waiting = self.factory.waiting, []
                for d in waiting:
                    d.callback(None)
            else:
                self.data.append(line[1:] if line.startswith(b"..") else line)
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb in (b"EHLO", b"HELO"):
            self.sendLine(b"250 sink.far.test")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            self.sendLine(b"250 2.0.0 ok")
        elif verb == b"DATA":
            self.data = []
            self.sendLine(b"354 go ahead")
        elif verb == b"QUIT":
            self.sendLine(b"221 2.0.0 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"502 5.5.1 not here")


class SinkFactory(protocol.ServerFactory):
    protocol = _SinkSession

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.waiting: list[defer.Deferred] = []

    def next_message(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        return d


# -- servers and zone ------------------------------------------------------------------------------
def start_zone() -> DNSFixtureServer:
    """The DNS fixture on port 53 of a private loopback address (see test_dkim_opendkim)."""
    rng = random.Random()
    for _attempt in range(10):
        host = f"127.53.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
        try:
            return DNSFixtureServer().start(host=host, port=53)
        except CannotListenError:
            continue
    pytest.fail("could not bind a DNS fixture to port 53 on a loopback address (needs root)")


def config_for(tmp_path, name: str, hostname: str, listeners, zone, **sections) -> Config:
    data = {
        "server": {"hostname": hostname, "data_dir": str(tmp_path / name / "data"), "listener": {}},
        "auth": dict(FAST_AUTH),
        "storage": {"index": {"commit_interval": "50ms"}},
        "dns": {"nameservers": [f"{zone.host}:{zone.port}"], "timeout": "1s"},
        # Every client here is 127.0.0.1: score it as the stranger it plays, and never greylist.
        "spam": {"allowlist": {"networks": []}, "greylist": {"enabled": False}},
    }
    for listener in listeners:
        data["server"]["listener"][listener] = dict(LISTENERS[listener], bind="127.0.0.1:0")
    data.update(sections)
    return Config.from_dict(data, source="<test>")


class Network:
    """The three servers, the zone and the keys, built once for the module."""

    def __init__(self, tmp_path) -> None:
        self.zone = start_zone()
        zone = self.zone
        self.sink = SinkFactory()
        self.sink_port = global_reactor.listenTCP(0, self.sink, interface="127.0.0.1")
        sink_port = self.sink_port.getHost().port
        self.mx = TestServer(config_for(
            tmp_path, "mx", "mail.example.test", ["smtp", "imap"], zone,
            smtp={"relay_host": "127.0.0.1", "relay_port": sink_port, "relay_tls": "none"}))
        self.mx.startService()
        self.origin = TestServer(config_for(
            tmp_path, "origin", "mail.origin.test", ["submission"], zone,
            smtp={"relay_host": "127.0.0.1", "relay_port": self.mx.port("smtp"), "relay_tls": "none"}))
        self.origin.startService()

        # Senders out on the internet, as the zone describes them.
        self.sender_key, sender_txt = generate_dkim_key("rsa-sha256")
        records = {
            "sender.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
            "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=reject"]},
            "sel1._domainkey.sender.test": {"TXT": [sender_txt]},
            "client.sender.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
            "softfail.test": {"TXT": ["v=spf1 ip4:192.0.2.1 ~all"]},
            "fail.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
            "reject.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
            "_dmarc.reject.test": {"TXT": ["v=DMARC1; p=reject"]},
            "quarantine.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
            "_dmarc.quarantine.test": {"TXT": ["v=DMARC1; p=quarantine"]},
            "origin.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
            "_dmarc.origin.test": {"TXT": ["v=DMARC1; p=reject; adkim=s"]},
        }
        for name, by_type in records.items():
            for record_type, values in by_type.items():
                for value in values:
                    zone.add(name, record_type, value)
        zone.fail("broken.test")
        zone.fail("_dmarc.broken.test")

        pytest_twisted.blockon(add_user(self.mx, "alice@example.test", "alice-password"))
        pytest_twisted.blockon(self.mx.directory.add_alias("fwd@example.test", ["carol@far.test"]))
        pytest_twisted.blockon(add_user(self.origin, "bob@origin.test", "bob-password"))
        # Keys generated the way `mailserve dkim generate` does, published as it prints them.
        self.origin_keys = []
        for algorithm in ("rsa", "ed25519"):
            key = pytest_twisted.blockon(deferToThread(
                DKIMKeyStore(self.origin.metadata).generate, "origin.test", algorithm))
            zone.add(key.record_name, "TXT", key.txt)
            self.origin_keys.append(key)
        seal_key = pytest_twisted.blockon(deferToThread(
            DKIMKeyStore(self.mx.metadata).generate, "example.test", "rsa", "arc1"))
        zone.add(seal_key.record_name, "TXT", seal_key.txt)

    def stop(self) -> None:
        pytest_twisted.blockon(self.origin.stopService())
        pytest_twisted.blockon(self.mx.stopService())
        pytest_twisted.blockon(defer.maybeDeferred(self.sink_port.stopListening))
        pytest_twisted.blockon(self.zone.stop())


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Network(tmp_path_factory.mktemp("mailauth"))
    yield network
    network.stop()


# -- helpers -------------------------------------------------------------------------------------
def message(from_addr: str, subject: str, body: bytes = b"Hello Alice,\r\n\r\nsee you at the meeting.\r\n",
            extra: bytes = b"") -> bytes:
    return (f"From: Sender <{from_addr}>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            f"Message-ID: <{random.getrandbits(64):x}@{from_addr.rpartition('@')[2]}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n").encode() + extra + b"\r\n" + body


def send(server, mail_from: str, rcpts, data: bytes, helo: str = "client.sender.test"):
    """Send over the MX listener from a thread; returns the refused dict, or raises the SMTP error."""

    def go():
        with smtplib.SMTP(*server.address("smtp"), local_hostname=helo, timeout=30) as smtp:
            return smtp.sendmail(mail_from, rcpts, data)

    return deferToThread(go)


def mailbox(server, address: str, name: str = "INBOX") -> list[bytes]:
    account = server.directory.get_account(address)
    core = server.core
    box = core.find_mailbox(account.id, name)
    messages = core.get_messages(account.id, [msgid for _, msgid in core.mailbox_uids(account.id, box.id)])
    return [core.blobs.get(m.blob_id) for m in messages]


def find(server, subject: str, box: str = "INBOX") -> bytes:
    matches = [m for m in mailbox(server, "alice@example.test", box) if f"Subject: {subject}\r\n".encode() in m]
    assert len(matches) == 1, f"{len(matches)} messages with subject {subject!r} in {box}"
    return matches[0]


def header_block(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").replace("\r\n\t", " ").replace("\r\n ", " ")


def auth_results(raw: bytes) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in header_block(raw).split("\r\n")
            if line.lower().startswith("authentication-results:")]


async def eventually(check, what: str, limit: float = 30.0):
    """Wait (without blocking the reactor) until ``check()`` is truthy; fail after ``limit``."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await task.deferLater(global_reactor, 0.05, lambda: None)


def dnsfunc(zone: DNSFixtureServer):
    """dkimpy's DNS hook answered from the zone's table (what dkimverify would ask DNS)."""

    def lookup(name, timeout=5):
        name = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        for rr in zone._records.get(name, {}).get(16, []):
            return b"".join(rr.payload.data)
        return None

    return lookup


# -- SPF ---------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_spf_pass_for_mail_from_and_helo(net):
    assert await send(net.mx, "news@sender.test", ["alice@example.test"],
                      message("news@sender.test", "spf pass")) == {}
    [results] = auth_results(find(net.mx, "spf pass"))
    assert results.startswith("mail.example.test;")
    assert "spf=pass" in results and "smtp.mailfrom=news@sender.test" in results
    assert "smtp.helo=client.sender.test" in results


@pytest_twisted.ensureDeferred
async def test_spf_fail_is_recorded_and_scored(net):
    assert await send(net.mx, "someone@fail.test", ["alice@example.test"],
                      message("someone@fail.test", "spf fail"), helo="unknown.invalid") == {}
    stored = find(net.mx, "spf fail")
    [results] = auth_results(stored)
    assert "spf=fail" in results and "smtp.mailfrom=someone@fail.test" in results
    assert "SPF_FAIL" in header_block(stored)


@pytest_twisted.ensureDeferred
async def test_spf_softfail(net):
    assert await send(net.mx, "someone@softfail.test", ["alice@example.test"],
                      message("someone@softfail.test", "spf softfail")) == {}
    [results] = auth_results(find(net.mx, "spf softfail"))
    assert "spf=softfail" in results


@pytest_twisted.ensureDeferred
async def test_servfail_gives_temperror_and_mail_is_accepted(net):
    assert await send(net.mx, "someone@broken.test", ["alice@example.test"],
                      message("someone@broken.test", "dns trouble")) == {}
    [results] = auth_results(find(net.mx, "dns trouble"))
    assert "spf=temperror" in results and "dmarc=temperror" in results


# -- DKIM ---------------------------------------------------------------------------------------
def dkim_signed(net, subject: str) -> bytes:
    unsigned = message("news@sender.test", subject)
    signature = dkim.sign(unsigned, b"sel1", b"sender.test", net.sender_key,
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + unsigned


@pytest_twisted.ensureDeferred
async def test_dkim_pass(net):
    assert await send(net.mx, "news@sender.test", ["alice@example.test"], dkim_signed(net, "dkim good")) == {}
    [results] = auth_results(find(net.mx, "dkim good"))
    assert "dkim=pass" in results and "header.d=sender.test" in results and "header.s=sel1" in results
    assert "dmarc=pass" in results


@pytest_twisted.ensureDeferred
async def test_dkim_fail_when_the_body_was_altered(net):
    tampered = dkim_signed(net, "dkim altered").replace(b"see you at the meeting", b"send me your password")
    assert await send(net.mx, "news@sender.test", ["alice@example.test"], tampered) == {}
    [results] = auth_results(find(net.mx, "dkim altered"))
    assert "dkim=fail" in results and "header.d=sender.test" in results
    # SPF still passes and aligns, so DMARC passes (RFC 7489 section 4.2: either suffices).
    assert "dmarc=pass" in results


# -- DMARC --------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_dmarc_reject_refuses_at_end_of_data_and_stores_nothing(net):
    before = len(mailbox(net.mx, "alice@example.test")) + len(mailbox(net.mx, "alice@example.test", "Junk"))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await send(net.mx, "ceo@reject.test", ["alice@example.test"], message("ceo@reject.test", "dmarc reject"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    assert b"reject.test" in refused.value.smtp_error
    after = len(mailbox(net.mx, "alice@example.test")) + len(mailbox(net.mx, "alice@example.test", "Junk"))
    assert after == before


@pytest_twisted.ensureDeferred
async def test_dmarc_quarantine_files_into_junk(net):
    assert await send(net.mx, "billing@quarantine.test", ["alice@example.test"],
                      message("billing@quarantine.test", "dmarc quarantine")) == {}
    stored = find(net.mx, "dmarc quarantine", "Junk")
    [results] = auth_results(stored)
    assert "dmarc=fail" in results and "dis=QUARANTINE" in results
    assert not [m for m in mailbox(net.mx, "alice@example.test") if b"dmarc quarantine" in m]


# -- Authentication-Results -----------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_forged_results_with_our_authserv_id_are_removed_and_ours_read_over_imap(net):
    forged = (b"Authentication-Results: mail.example.test; dkim=pass header.d=bank.test; dmarc=pass\r\n"
              b"Authentication-Results: mx.elsewhere.test; spf=pass smtp.mailfrom=news@sender.test\r\n")
    assert await send(net.mx, "news@sender.test", ["alice@example.test"],
                      message("news@sender.test", "forged results", extra=forged)) == {}

    def fetch():
        with imaplib.IMAP4(*net.mx.address("imap")) as imap:
            imap.login("alice@example.test", "alice-password")
            imap.select("INBOX", readonly=True)
            status, found = imap.search(None, "SUBJECT", '"forged results"')
            assert status == "OK" and len(found[0].split()) == 1
            status, data = imap.fetch(found[0].split()[0], "(BODY.PEEK[HEADER])")
            assert status == "OK"
            return data[0][1]

    header = await deferToThread(fetch)
    results = auth_results(header)
    ours = [r for r in results if r.startswith("mail.example.test;")]
    assert len(ours) == 1, results
    assert "bank.test" not in ours[0] and "spf=pass" in ours[0]
    # Another ADMD's field is information, and stays (RFC 8601 section 5).
    assert any(r.startswith("mx.elsewhere.test;") for r in results)
    # Our trace field stays on top, the results right below it (as a Postfix milter writes them).
    lines = header_block(header).split("\r\n")
    assert lines[0].startswith("Return-Path:") and lines[1].startswith("Received: from client.sender.test")
    ours_at = lines.index(next(line for line in lines if line.startswith("Authentication-Results: mail.example.test;")))
    assert ours_at < lines.index(next(line for line in lines if line.startswith("From:")))


# -- spam ---------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_delivered_mail_carries_the_spam_verdict(net):
    assert await send(net.mx, "news@sender.test", ["alice@example.test"], dkim_signed(net, "plain ham")) == {}
    header = header_block(find(net.mx, "plain ham"))
    status = [line for line in header.split("\r\n") if line.startswith("X-Spam-Status:")]
    assert len(status) == 1 and status[0].startswith("X-Spam-Status: No, score=")
    # The verdict explains itself, authentication results included.
    assert "DKIM_VALID" in status[0] and "DMARC_PASS" in status[0] and "SPF_PASS" in status[0]
    assert "X-Spam-Result:" in header


@pytest_twisted.ensureDeferred
async def test_gtube_is_refused(net):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await send(net.mx, "news@sender.test", ["alice@example.test"],
                   message("news@sender.test", "gtube", body=b"Test\r\n" + GTUBE + b"\r\n"))
    assert (refused.value.smtp_code, refused.value.smtp_error[:6]) == (550, b"5.7.1 ")
    assert not [m for m in mailbox(net.mx, "alice@example.test") if b"Subject: gtube" in m]


@pytest_twisted.ensureDeferred
async def test_junk_moves_over_imap_train_the_accounts_bayes_database(net):
    assert await send(net.mx, "news@sender.test", ["alice@example.test"],
                      message("news@sender.test", "train me", body=b"Cheap pills, buy now!\r\n")) == {}
    find(net.mx, "train me")
    account = net.mx.directory.get_account("alice@example.test").id
    store = net.mx.spam_filter.store
    before = store.totals(account)

    def move(source: str, target: str) -> None:
        with imaplib.IMAP4(*net.mx.address("imap")) as imap:
            imap.login("alice@example.test", "alice-password")
            imap.select(source)
            status, found = imap.uid("SEARCH", "SUBJECT", '"train me"')
            assert status == "OK" and len(found[0].split()) == 1
            status, _ = imap.uid("MOVE", found[0].split()[0], target)
            assert status == "OK"

    await deferToThread(move, "INBOX", "Junk")
    await eventually(lambda: store.totals(account).spam == before.spam + 1, "learning as spam")
    assert store.totals(account).ham == before.ham
    await deferToThread(move, "Junk", "INBOX")
    # Moving it back out takes back the lesson and learns it as ham (sa-learn semantics).
    await eventually(lambda: store.totals(account).ham == before.ham + 1, "learning as ham")
    assert store.totals(account).spam == before.spam


# -- outbound -------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_submitted_mail_arrives_dkim_signed_and_verifies_with_dkimpy_and_opendkim(net, tmp_path):
    unsigned = (b"From: Bob <bob@origin.test>\r\nTo: Alice <alice@example.test>\r\n"
                b"Subject: signed by origin\r\n\r\nHi Alice,\r\n\r\nthe report is ready.\r\n")

    def submit():
        with smtplib.SMTP(*net.origin.address("submission"), timeout=30) as smtp:
            smtp.login("bob@origin.test", "bob-password")
            return smtp.sendmail("bob@origin.test", ["alice@example.test"], unsigned)

    assert await deferToThread(submit) == {}
    raw = await eventually(lambda: [m for m in mailbox(net.mx, "alice@example.test")
                                    if b"Subject: signed by origin" in m], "the message at mx")
    arrived = raw[0]
    header = header_block(arrived)
    signatures = [line for line in header.split("\r\n") if line.lower().startswith("dkim-signature:")]
    assert len(signatures) == 2
    assert any("a=rsa-sha256" in s for s in signatures) and any("a=ed25519-sha256" in s for s in signatures)
    # Over-signed: a second From or Subject added later would break the signature.
    rsa_signature = next(s for s in signatures if "a=rsa-sha256" in s)
    h_tag = next(t.strip() for t in rsa_signature.split(";") if t.strip().startswith("h="))
    signed_fields = [f.strip().lower() for f in h_tag[2:].replace(" ", "").split(":")]
    for name in ("from", "subject", "to", "date", "message-id"):
        assert signed_fields.count(name) == 2, signed_fields
    # The receiving mailserve verified both, and DMARC passed on strict alignment.
    [results] = auth_results(arrived)
    assert results.count("dkim=pass") == 2 and "dmarc=pass" in results

    # dkimpy (what dkimverify runs) verifies every signature against the published keys.
    delivered = arrived.split(b"\r\n", 1)[1]  # without the Return-Path added at delivery
    verifier = dkim.DKIM(delivered)
    assert [verifier.verify(idx=i, dnsfunc=dnsfunc(net.zone)) for i in range(2)] == [True, True]

    # OpenDKIM verifies it through the system resolver pointed at the zone.
    assert os.path.exists(OPENDKIM_TESTMSG), "install the opendkim-tools package"
    out, err, code = await run_with_resolver(tmp_path, net.zone, [OPENDKIM_TESTMSG], lf(delivered))
    assert (code, err) == (0, b""), (out, err)
    tampered = lf(delivered).replace(b"the report is ready", b"the report is late")
    out, err, code = await run_with_resolver(tmp_path, net.zone, [OPENDKIM_TESTMSG], tampered)
    assert code != 0 and err


@pytest_twisted.ensureDeferred
async def test_alias_to_a_remote_address_is_arc_sealed(net):
    arrived = net.sink.next_message()
    assert await send(net.mx, "news@sender.test", ["fwd@example.test"], dkim_signed(net, "forward me")) == {}
    await arrived
    [forwarded] = [m for m in net.sink.received if b"Subject: forward me" in m]
    header = header_block(forwarded)
    lines = header.split("\r\n")
    assert lines[0].startswith("ARC-Seal: i=1;") and "cv=none" in lines[0]
    assert any(line.startswith("ARC-Message-Signature: i=1;") for line in lines)
    aar = [line for line in lines if line.startswith("ARC-Authentication-Results: i=1;")]
    assert len(aar) == 1 and "mail.example.test" in aar[0] and "dkim=pass" in aar[0] and "spf=pass" in aar[0]
    assert len(auth_results(forwarded)) == 1
    # The chain validates at the next hop (dkimpy's ARC verifier, keys from the zone).
    cv, _details, reason = dkim.arc_verify(forwarded, dnsfunc=dnsfunc(net.zone))
    assert cv == b"pass", reason


@pytest_twisted.ensureDeferred
async def test_messages_are_counted_on_the_metrics(net):
    metrics = net.mx.metrics
    received = metrics.messages_received.labels(protocol="smtp")._value.get()
    rejected = metrics.messages_rejected.labels(reason="authentication")._value.get()
    delivered = metrics.messages_delivered._value.get()
    assert await send(net.mx, "news@sender.test", ["alice@example.test"], dkim_signed(net, "counted")) == {}
    with pytest.raises(smtplib.SMTPDataError):
        await send(net.mx, "ceo@reject.test", ["alice@example.test"], message("ceo@reject.test", "counted too"))
    assert metrics.messages_received.labels(protocol="smtp")._value.get() == received + 1
    assert metrics.messages_delivered._value.get() == delivered + 1
    assert metrics.messages_rejected.labels(reason="authentication")._value.get() == rejected + 1
