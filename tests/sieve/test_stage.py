"""The Sieve delivery stage over a real MailServer: what each action stores and queues.

Every test gets its own account on one module-wide server, runs the stage on a real
``DeliveryContext`` and delivers with the real ``LocalDelivery``; the outbound queue is stopped so
that what a script queued (redirects, vacation replies) stays in ``outbound_queue.entries()``.
"""

from __future__ import annotations

import itertools
import re

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from mailserve.core import keys
from mailserve.sieve.interpreter import SieveLimits
from mailserve.sieve.scripts import SieveScripts
from mailserve.sieve.stage import SieveStage, StoredResponseTracker, clean_flags, clean_reason, spam_test_values
from mailserve.smtp.delivery import LocalDelivery
from mailserve.smtp.pipeline import DeliveryContext, DeliveryPipeline, Envelope, MailboxCopy, RecipientContext
from mailserve.smtp.stages import build_pipeline
from mailserve.spam.filter import SpamFilter
from mailserve.spam.stage import SpamVerdictStage
from mailserve.spam.verdict import RuleHit, SpamAction, SpamVerdict
from tests.e2e.harness import add_user, start_server
from tests.spam.test_filter import SPAM

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("sieve-stage"))
    # Keep queued messages in the queue so tests can read them.
    pytest_twisted.blockon(srv.outbound_queue.stopService())
    yield srv
    pytest_twisted.blockon(srv.stopService())


@pytest.fixture(scope="module")
def stage(server):
    return SieveStage.from_server(server)


def message(subject="Hello", sender="carol@remote.test", to="{rcpt}", extra="", message_id=None, body="Hi there.\r\n"):
    message_id = message_id or f"<m{next(_numbers)}@remote.test>"
    head = f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n" \
           "Date: Tue, 01 Dec 2026 03:00:00 +0000\r\n" + extra
    return (head + "\r\n" + body).encode()


class Account:
    def __init__(self, server, account, address):
        self.server = server
        self.id = account.id
        self.address = address

    def mailboxes(self) -> dict[str, list[tuple[frozenset[str], bytes]]]:
        """Mailbox name -> (flags, bytes) of every stored message."""
        core = self.server.core
        stored = {}
        for mailbox in core.list_mailboxes(self.id):
            ids = [msgid for _uid, msgid in core.mailbox_uids(self.id, mailbox.id)]
            messages = core.get_messages(self.id, ids)
            if messages:
                stored[mailbox.name] = [(m.keywords, self.server.blobs.get(m.blob_id)) for m in messages]
        return stored


async def new_account(server, script: str | None = None) -> Account:
    address = f"user{next(_numbers)}@example.test"
    account = await add_user(server, address, "password-1")
    if script is not None:
        scripts = SieveScripts(server.metadata)
        await scripts.put_script(account.id, "main", script, 100, 1 << 20)
        await scripts.set_active(account.id, "main")
    return Account(server, account, address)


async def deliver(stage, accounts, raw, mail_from="carol@remote.test", notes=None, details=None,
                  addresses=None):
    addresses = addresses or [a.address for a in accounts]
    details = details or [None] * len(accounts)
    contexts = [RecipientContext(address, a.id, detail) for a, address, detail in zip(accounts, addresses, details)]
    raw = raw.replace(b"{rcpt}", addresses[0].encode())
    context = DeliveryContext(Envelope(mail_from, tuple(addresses), "client.remote.test", "192.0.2.7"), raw,
                              contexts, notes=dict(notes or {}))
    context.add_header("Received", "from client.remote.test by mail.example.test; Tue, 1 Dec 2026 03:00:00 +0000")
    await DeliveryPipeline([stage]).run(context)
    outcomes = await LocalDelivery(stage.core).deliver(context)
    return context, outcomes


def queued_to(server, address):
    """(envelope sender, message bytes) of every queued message to ``address``."""
    found = []
    for entry in server.outbound_queue.entries():
        if any(r.address == address for r in entry.recipients):
            found.append((entry.mail_from, server.blobs.get(entry.blob_id)))
    return found


def header(raw: bytes, name: str) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    return [m.group(1) for m in re.finditer(rf"(?mi)^{name}: ?([^\r\n]*)", head)]


# -- wiring --------------------------------------------------------------------------------------

def test_server_pipeline_has_the_sieve_stage(server):
    pipeline = build_pipeline(server)
    assert isinstance(pipeline.stages[pipeline.names.index("sieve")], SieveStage)


@pytest_twisted.ensureDeferred
async def test_no_active_script_is_implicit_keep(server, stage):
    account = await new_account(server)
    context, outcomes = await deliver(stage, [account], message())
    assert context.recipients[0].copies is None
    assert outcomes[0].failure is None and outcomes[0].uid
    assert list(account.mailboxes()) == ["INBOX"]


# -- keep / fileinto / flags ------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_keep_and_fileinto_store_one_copy_each_with_their_flags(server, stage):
    account = await new_account(server, 'require ["fileinto", "imap4flags"];\n'
                                        'fileinto :flags ["\\\\seen", "$Work"] "Archive";\n'
                                        'keep :flags "\\\\Flagged";\n')
    _, outcomes = await deliver(stage, [account], message())
    stored = account.mailboxes()
    assert sorted(stored) == ["Archive", "INBOX"]
    assert stored["Archive"][0][0] == {"\\Seen", "$Work"}  # system flag in canonical spelling
    assert stored["INBOX"][0][0] == {"\\Flagged"}
    assert stored["Archive"][0][1] == stored["INBOX"][0][1]  # the same bytes, one ingest
    assert len(outcomes[0].stored) == 2


@pytest_twisted.ensureDeferred
async def test_two_fileintos_without_keep(server, stage):
    account = await new_account(server, 'require ["fileinto", "copy", "imap4flags"];\n'
                                        'addflag "\\\\Answered";\nfileinto :copy "Archive";\nfileinto "Trash";\n')
    await deliver(stage, [account], message())
    stored = account.mailboxes()
    assert sorted(stored) == ["Archive", "Trash"]
    assert stored["Trash"][0][0] == {"\\Answered"} == stored["Archive"][0][0]


@pytest_twisted.ensureDeferred
async def test_fileinto_create_makes_the_mailbox_and_missing_mailbox_means_inbox(server, stage):
    account = await new_account(server, 'require ["fileinto", "mailbox"];\n'
                                        'if header :contains "subject" "new" { fileinto :create "Lists/Sieve"; }\n'
                                        'else { fileinto "Does-Not-Exist"; }\n')
    await deliver(stage, [account], message(subject="new folder"))
    await deliver(stage, [account], message(subject="other"))
    stored = account.mailboxes()
    assert len(stored["Lists/Sieve"]) == 1 and b"new folder" in stored["Lists/Sieve"][0][1]
    assert len(stored["INBOX"]) == 1 and b"Subject: other" in stored["INBOX"][0][1]
    assert "Does-Not-Exist" not in [m.name for m in server.core.list_mailboxes(account.id)]


@pytest_twisted.ensureDeferred
async def test_mailboxexists(server, stage):
    account = await new_account(server, 'require ["fileinto", "mailbox"];\n'
                                        'if mailboxexists "Nope" { discard; }\n'
                                        'elsif mailboxexists ["Archive", "INBOX"] { fileinto "Archive"; }\n')
    await deliver(stage, [account], message())
    assert list(account.mailboxes()) == ["Archive"]


def test_invalid_flags_are_dropped():
    assert clean_flags(("\\Seen", "\\Recent", "\\Bogus", "$Label1", "bad(flag", "sp ace", "ü")) == {"\\Seen", "$Label1"}


# -- discard / reject --------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_discard_stores_nothing_and_succeeds(server, stage):
    account = await new_account(server, 'if header :is "subject" "junk" { discard; }\n')
    context, outcomes = await deliver(stage, [account], message(subject="junk"))
    assert context.recipients[0].discarded
    assert outcomes[0].failure is None
    assert account.mailboxes() == {}


@pytest_twisted.ensureDeferred
async def test_reject_refuses_only_that_recipient_with_the_reason(server, stage):
    rejecting = await new_account(server, 'require "reject";\nreject text:\nI do not want\r\n  this mail.\n.\n;\n')
    accepting = await new_account(server)
    _, outcomes = await deliver(stage, [rejecting, accepting], message())
    failure = outcomes[0].failure
    assert (failure.code, failure.status) == (550, "5.7.1")
    assert failure.text == "I do not want this mail."
    assert outcomes[1].failure is None
    assert rejecting.mailboxes() == {} and list(accepting.mailboxes()) == ["INBOX"]


@pytest_twisted.ensureDeferred
async def test_ereject(server, stage):
    account = await new_account(server, 'require "ereject";\nereject "No thanks";\n')
    _, outcomes = await deliver(stage, [account], message())
    assert str(outcomes[0].failure) == "550 5.7.1 No thanks"


def test_reject_reason_is_one_bounded_ascii_line():
    assert clean_reason("a\r\nb\tc  é") == "a b c ?"
    assert len(clean_reason("x" * 5000)) == 400
    assert clean_reason("  ") == "Message rejected"


# -- redirect ------------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_redirect_queues_with_the_original_sender_and_no_local_copy(server, stage):
    target = f"fwd{next(_numbers)}@elsewhere.test"
    account = await new_account(server, f'redirect "{target}";\n')
    await deliver(stage, [account], message(), mail_from="orig-sender@remote.test")
    assert account.mailboxes() == {}
    [(mail_from, raw)] = queued_to(server, target)
    assert mail_from == "orig-sender@remote.test"
    assert header(raw, "Delivered-To") == [account.address]
    assert raw.endswith(b"\r\n\r\nHi there.\r\n") and b"Received: from client.remote.test" in raw


@pytest_twisted.ensureDeferred
async def test_redirect_copy_keeps_and_retry_is_not_redirected_twice(server, stage):
    target = f"fwd{next(_numbers)}@elsewhere.test"
    account = await new_account(server, f'require "copy";\nredirect :copy "{target}";\n')
    raw = message(message_id="<retried@remote.test>")
    await deliver(stage, [account], raw)
    await deliver(stage, [account], raw)  # the client retries the same message
    assert len(queued_to(server, target)) == 1
    assert len(account.mailboxes()["INBOX"]) == 2


@pytest_twisted.ensureDeferred
async def test_redirect_loops_are_kept_not_sent(server, stage):
    account = await new_account(server, 'redirect "loop-target@elsewhere.test";\n')
    looped = message(extra="Delivered-To: {rcpt}\r\n")
    await deliver(stage, [account], looped)
    assert len(account.mailboxes()["INBOX"]) == 1
    selfish = await new_account(server)
    await SieveScripts(server.metadata).put_script(selfish.id, "main", f'redirect "{selfish.address}";\n', 100, 1 << 20)
    await SieveScripts(server.metadata).set_active(selfish.id, "main")
    await deliver(stage, [selfish], message())
    assert len(selfish.mailboxes()["INBOX"]) == 1
    assert queued_to(server, "loop-target@elsewhere.test") == []
    assert queued_to(server, selfish.address) == []


@pytest_twisted.ensureDeferred
async def test_too_many_redirects_fail_the_script_into_inbox_and_log(server):
    stage = SieveStage.from_server(server)
    stage.limits = SieveLimits(max_redirects=2)
    targets = [f"many{next(_numbers)}@elsewhere.test" for _ in range(3)]
    account = await new_account(server, "".join(f'redirect "{t}";\n' for t in targets))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        await deliver(stage, [account], message())
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert len(account.mailboxes()["INBOX"]) == 1
    assert all(queued_to(server, t) == [] for t in targets)
    failures = [e for e in events if e.get("log_namespace", "").startswith("mailserve.sieve.stage")
                and e.get("error") and "redirects" in e["error"]]
    assert failures and failures[0]["account"] == account.id


@pytest_twisted.ensureDeferred
async def test_runtime_error_in_a_regex_keeps_the_message(server, stage):
    account = await new_account(server, 'require ["regex", "variables", "fileinto"];\nset "re" "(unclosed";\n'
                                        'fileinto "Trash";\nif header :regex "subject" "${re}" { fileinto "Archive"; }\n')
    await deliver(stage, [account], message())
    assert list(account.mailboxes()) == ["INBOX"]


# -- vacation --------------------------------------------------------------------------------------------

VACATION = ('require ["vacation"];\nvacation :days 3 :subject "Out of office" :from "Me <{me}>" '
            ':addresses ["alias@example.test"] "I am away until Monday.";\n')


@pytest_twisted.ensureDeferred
async def test_vacation_replies_once_per_sender_from_the_null_path(server, stage):
    account = await new_account(server)
    await SieveScripts(server.metadata).put_script(account.id, "main", VACATION.replace("{me}", account.address),
                                                   100, 1 << 20)
    await SieveScripts(server.metadata).set_active(account.id, "main")
    sender = f"asker{next(_numbers)}@remote.test"
    first = message(sender=sender, message_id="<first@remote.test>", extra="References: <root@remote.test>\r\n")
    await deliver(stage, [account], first, mail_from=sender)
    await deliver(stage, [account], message(sender=sender), mail_from=sender)
    # A fresh stage (nothing cached) still remembers: the tracking is in the metadata store.
    await deliver(stage=SieveStage.from_server(server), accounts=[account], raw=message(sender=sender),
                  mail_from=sender)
    [(mail_from, reply)] = queued_to(server, sender)
    assert mail_from == ""
    assert header(reply, "Auto-Submitted") == ["auto-replied"]
    assert header(reply, "Subject") == ["Out of office"]
    assert header(reply, "From") == [f"Me <{account.address}>"]
    assert header(reply, "To") == [f"<{sender}>"]
    assert header(reply, "In-Reply-To") == ["<first@remote.test>"]
    assert header(reply, "References") == ["<root@remote.test> <first@remote.test>"]
    assert reply.endswith(b"\r\n\r\nI am away until Monday.\r\n")
    assert len(account.mailboxes()["INBOX"]) == 3  # vacation keeps the message
    scan = server.metadata.read(lambda txn: list(txn.scan(keys.sieve_tracking_prefix(account.id))))
    assert [key for key, _ in scan if b"vacation:" in key]


@pytest_twisted.ensureDeferred
async def test_vacation_is_not_sent_to_lists_bulk_robots_or_bcc(server, stage):
    account = await new_account(server, 'require "vacation";\nvacation "away";\n')
    cases = {
        "list": {"extra": "List-Id: <devel.lists.remote.test>\r\n"},
        "bulk": {"extra": "Precedence: bulk\r\n"},
        "auto": {"extra": "Auto-Submitted: auto-generated\r\n"},
        "bcc": {"to": "someone-else@remote.test"},
    }
    senders = []
    for name, kwargs in cases.items():
        sender = f"{name}{next(_numbers)}@remote.test"
        senders.append(sender)
        await deliver(stage, [account], message(sender=sender, **kwargs), mail_from=sender)
    await deliver(stage, [account], message(sender="bounce@remote.test"), mail_from="")
    assert all(queued_to(server, sender) == [] for sender in senders)
    assert queued_to(server, "bounce@remote.test") == []
    assert len(account.mailboxes()["INBOX"]) == 5


@pytest_twisted.ensureDeferred
async def test_vacation_addresses_handle_seconds_and_mime(server, stage):
    account = await new_account(server, 'require ["vacation-seconds"];\n'
                                        'if header :contains "subject" "two" { vacation :seconds 0 :handle "b" "second"; }\n'
                                        'else { vacation :addresses "alias@example.test" :mime :handle "a" text:\n'
                                        'Content-Type: text/plain; charset=utf-8\n\nAbwesend bis Montag.\n.\n; }\n')
    sender = f"multi{next(_numbers)}@remote.test"
    await deliver(stage, [account], message(sender=sender, to="Alias <alias@example.test>"), mail_from=sender)
    await deliver(stage, [account], message(sender=sender, subject="two"), mail_from=sender)
    await deliver(stage, [account], message(sender=sender, subject="two"), mail_from=sender)
    replies = [raw for _, raw in queued_to(server, sender)]
    assert len(replies) == 3  # :addresses matched once; :seconds 0 replies every time
    assert header(replies[0], "Content-Type") == ["text/plain; charset=utf-8"]
    assert replies[0].endswith(b"\r\n\r\nAbwesend bis Montag.\r\n")
    assert header(replies[0], "Subject") == ["Auto: Hello"]
    assert all(reply.endswith(b"second\r\n") for reply in replies[1:])


# -- editheader, duplicate ------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_editheader_changes_only_that_recipients_copy(server, stage):
    editing = await new_account(server, 'require "editheader";\naddheader "X-Filed" "by sieve";\n'
                                        'deleteheader "X-Secret";\n')
    plain = await new_account(server)
    raw = message(extra="X-Secret: 42\r\n")
    await deliver(stage, [editing, plain], raw)
    [(_, edited)] = editing.mailboxes()["INBOX"]
    [(_, untouched)] = plain.mailboxes()["INBOX"]
    assert header(edited, "X-Filed") == ["by sieve"] and header(edited, "X-Secret") == []
    assert edited.startswith(b"Return-Path: <carol@remote.test>\r\nX-Filed: by sieve\r\nReceived: from client")
    assert header(untouched, "X-Secret") == ["42"] and header(untouched, "X-Filed") == []
    assert edited.endswith(b"\r\n\r\nHi there.\r\n")


@pytest_twisted.ensureDeferred
async def test_duplicate_is_tracked_durably(server, stage):
    account = await new_account(server, 'require ["duplicate", "fileinto"];\n'
                                        'if duplicate { fileinto "Trash"; }\n')
    raw = message(message_id="<dup@remote.test>")
    await deliver(stage, [account], raw)
    await deliver(SieveStage.from_server(server), [account], raw)
    stored = account.mailboxes()
    assert len(stored["INBOX"]) == 1 and len(stored["Trash"]) == 1


@pytest_twisted.ensureDeferred
async def test_tracker_keeps_expiry_unless_refreshed_and_prunes_expired(server):
    now = [1_000_000.0]
    tracker = StoredResponseTracker(server.metadata, 999_999, lambda: now[0])
    tracker.record("duplicate:old", 10, False)
    tracker.record("duplicate:x", 100, False)
    await tracker.commit()
    assert tracker.seen("duplicate:x") and tracker.seen("duplicate:old")
    now[0] += 50
    tracker.record("duplicate:x", 100, False)
    await tracker.commit()
    now[0] += 60
    assert not tracker.seen("duplicate:x")  # not refreshed: expired after 100 s
    tracker.record("duplicate:x", 100, True)
    await tracker.commit()
    assert tracker.seen("duplicate:x")
    assert tracker.commit() is None
    stored = server.metadata.read(lambda txn: [k for k, _ in txn.scan(keys.sieve_tracking_prefix(999_999))])
    assert stored == [keys.sieve_tracking(999_999, "duplicate:x")]  # the expired record was pruned


# -- spamtest / virustest, envelope, subaddress ----------------------------------------------------------

def verdict(score, *rules):
    return SpamVerdict(score, SpamAction.DELIVER, tuple(RuleHit(rule, 1.0) for rule in rules), 5.0)


def test_spam_values_scale():
    assert spam_test_values({}, 1) == (None, None, None)
    assert spam_test_values({"spam_verdict": verdict(0.0)}, 1) == (1, 0, 1)
    assert spam_test_values({"spam_verdict": verdict(5.0)}, 1) == (6, 50, 1)
    assert spam_test_values({"spam_verdict": verdict(25.0, "EXECUTABLE_ATTACHMENT")}, 1) == (10, 100, 4)
    assert spam_test_values({"spam_score": 2.5}, 1) == (3, 25, None)


SPAMTEST = ('require ["spamtestplus", "virustest", "fileinto", "relational", "comparator-i;ascii-numeric"];\n'
            'if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "Drafts"; }\n'
            'elsif spamtest :value "ge" :comparator "i;ascii-numeric" "8" { fileinto "Junk"; }\n'
            'elsif spamtest :percent :value "lt" :comparator "i;ascii-numeric" "20" { fileinto "Archive"; }\n'
            'if virustest :value "eq" :comparator "i;ascii-numeric" "4" { fileinto :copy "Trash"; }\n')


@pytest_twisted.ensureDeferred
async def test_spamtest_and_virustest_read_the_spam_verdict(server, stage):
    account = await new_account(server, SPAMTEST.replace(':copy "Trash"', '"Trash"'))
    await deliver(stage, [account], message(subject="untested"))
    await deliver(stage, [account], message(subject="spammy"), notes={"spam_verdict": verdict(9.0)})
    await deliver(stage, [account], message(subject="clean"), notes={"spam_verdict": verdict(0.5)})
    await deliver(stage, [account], message(subject="virus"), notes={"spam_verdict": verdict(3.0, "EXECUTABLE_ATTACHMENT")})
    stored = account.mailboxes()
    assert b"untested" in stored["Drafts"][0][1]
    assert b"spammy" in stored["Junk"][0][1]
    assert b"clean" in stored["Archive"][0][1]
    assert b"virus" in stored["Trash"][0][1] and len(stored["Trash"]) == 1


@pytest_twisted.ensureDeferred
async def test_envelope_and_subaddress_detail(server, stage):
    account = await new_account(server, 'require ["envelope", "subaddress", "fileinto"];\n'
                                        'if envelope :detail "to" "lists" { fileinto "Archive"; }\n'
                                        'elsif envelope :domain "from" "remote.test" { fileinto "Trash"; }\n')
    local = account.address.split("@")[0]
    await deliver(stage, [account], message(), addresses=[f"{local}+lists@example.test"], details=["lists"])
    await deliver(stage, [account], message(), mail_from="x@remote.test")
    await deliver(stage, [account], message(), mail_from="x@other.test")
    stored = account.mailboxes()
    assert len(stored["Archive"]) == len(stored["Trash"]) == len(stored["INBOX"]) == 1


# -- per account, caching ---------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_one_account_named_twice_runs_its_script_once(server, stage):
    target = f"twice{next(_numbers)}@elsewhere.test"
    account = await new_account(server, f'require "copy";\nredirect :copy "{target}";\n')
    local, domain = account.address.split("@")
    _, outcomes = await deliver(stage, [account, account], message(),
                                addresses=[account.address, f"{local}+x@{domain}"], details=[None, "x"])
    assert [o.failure for o in outcomes] == [None, None]
    assert len(queued_to(server, target)) == 1
    assert len(account.mailboxes()["INBOX"]) == 1


@pytest_twisted.ensureDeferred
async def test_compiled_scripts_are_cached_by_content(server):
    stage = SieveStage.from_server(server)
    script = 'require "fileinto";\nfileinto "Archive";\n'
    first = await new_account(server, script)
    second = await new_account(server, script)
    await deliver(stage, [first, second], message())
    assert len(stage.compiled) == 1
    assert list(first.mailboxes()) == list(second.mailboxes()) == ["Archive"]


def test_recipient_copies_default_to_mailbox_and_keywords():
    recipient = RecipientContext("a@example.test", 1, mailbox="Junk", keywords={"$Junk"})
    assert recipient.stored_copies() == [MailboxCopy("Junk", frozenset({"$Junk"}))]
    recipient.copies = []
    assert recipient.stored_copies() == []


@pytest_twisted.ensureDeferred
async def test_vacation_days_expire(server):
    now = [1_800_000_000.0]
    stage = SieveStage.from_server(server)
    stage.clock = lambda: now[0]
    account = await new_account(server, 'require "vacation";\nvacation :days 2 "away";\n')
    sender = f"patient{next(_numbers)}@remote.test"
    await deliver(stage, [account], message(sender=sender), mail_from=sender)
    now[0] += 2 * 86400 - 60
    await deliver(stage, [account], message(sender=sender), mail_from=sender)
    assert len(queued_to(server, sender)) == 1
    now[0] += 120  # the two days are over (RFC 5230 §4.1)
    await deliver(stage, [account], message(sender=sender), mail_from=sender)
    assert len(queued_to(server, sender)) == 2


@pytest_twisted.ensureDeferred
async def test_keep_goes_where_the_spam_stage_sent_the_copy(server, stage):
    account = await new_account(server, 'require ["fileinto", "copy"];\nfileinto :copy "Archive";\n')
    recipient = RecipientContext(account.address, account.id, mailbox="Junk", keywords={"$Junk"})
    context = DeliveryContext(Envelope("carol@remote.test", (account.address,), "client.remote.test", "192.0.2.7"),
                              message().replace(b"{rcpt}", account.address.encode()), [recipient])
    await DeliveryPipeline([stage]).run(context)
    await LocalDelivery(server.core).deliver(context)
    stored = account.mailboxes()
    assert stored["Junk"][0][0] == {"$Junk"} and stored["Archive"][0][0] == frozenset()
    assert "INBOX" not in stored


@pytest_twisted.ensureDeferred
async def test_vacation_reply_headers_cannot_be_injected(server, stage):
    account = await new_account(server, 'require "vacation";\nvacation :from "Evil\\r\\nBcc: x@y <me@example.test>" "away";\n')
    sender = f"inject{next(_numbers)}@remote.test"
    raw = message(sender=sender, message_id="=?utf-8?q?<a@b>=0D=0ABcc:_victim@remote.test?=",
                  extra="References: " + " ".join(f"<ref{i}@remote.test>" for i in range(200)) + "\r\n")
    await deliver(stage, [account], raw, mail_from=sender)
    [(_, reply)] = queued_to(server, sender)
    assert header(reply, "Bcc") == []
    assert header(reply, "In-Reply-To") == ["<a@b> Bcc: victim@remote.test"]
    [references] = header(reply, "References")
    assert len(references) <= 900 and references.endswith("<ref199@remote.test> <a@b> Bcc: victim@remote.test")
    assert references.startswith("<ref")


@pytest_twisted.ensureDeferred
async def test_script_sees_the_real_spam_stage_headers_and_verdict(server, stage):
    account = await new_account(server, 'require ["fileinto", "spamtest", "relational", "comparator-i;ascii-numeric"];\n'
                                        'if allof (header :contains "X-Spam-Status" "Yes",\n'
                                        '          spamtest :value "ge" :comparator "i;ascii-numeric" "6") {\n'
                                        '  fileinto "Archive";\n}\n')
    spam_filter = SpamFilter(server.metadata, hostname="mail.example.test", overrides={"greylist": {"enabled": False}})
    context = DeliveryContext(Envelope("alert@secure-verify-login.icu", (account.address,), "mail.example.org",
                                       "192.0.2.7"), SPAM, [RecipientContext(account.address, account.id)])
    await DeliveryPipeline([SpamVerdictStage(spam_filter), stage]).run(context)
    await LocalDelivery(server.core).deliver(context)
    stored = account.mailboxes()
    assert list(stored) == ["Archive"]
    assert header(stored["Archive"][0][1], "X-Spam-Status")[0].startswith("Yes")


def test_script_limits_follow_the_live_configuration(tmp_path):
    """``managesieve.max_script_size`` is live: a script accepted under a raised limit also runs."""
    from mailserve.admin.settings import apply_live_settings
    from mailserve.service import MailServer
    from mailserve.sieve.errors import SieveSyntaxError
    from mailserve.sieve.stage import SieveStage
    from tests.e2e.harness import make_config

    server = MailServer(make_config(tmp_path, managesieve={"max_script_size": 1024}))
    stage = SieveStage.from_server(server)
    script = "# " + "x" * 2000 + "\nkeep;\n"
    with pytest.raises(SieveSyntaxError):
        stage.compiled.get(script, stage.limits)
    server.config = apply_live_settings(server.config, {"managesieve.max_script_size": 4096})
    assert stage.limits.max_script_size == 4096
    assert stage.compiled.get(script, stage.limits) is not None
