"""The outbound queue endpoints over a real socket, on a message really in the queue.

The server runs in this process (``tests.e2e.harness``) so the test can put a message on
``server.outbound_queue`` itself; the queue's delivery runner is stopped first, so the message
stays queued (no DNS, no remote connection) and every state the API shows is the stored one.
Requests are made from a thread: the reactor keeps serving them.
"""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.harness import add_user, start_server
from tests.web.conftest import http_request

MESSAGE = (b"From: alice@queue.example.test\r\nTo: rob@remote.example.test\r\nSubject: waiting\r\n"
           b"Message-ID: <q1@queue.example.test>\r\n\r\nThis one stays in the queue.\r\n")


@pytest_twisted.ensureDeferred
async def test_list_show_retry_delete_of_a_queued_message(tmp_path):
    server = start_server(tmp_path, ["http"])
    try:
        queue = server.outbound_queue
        await queue.stopService()  # keep the message queued: no delivery attempt
        await add_user(server, "alice@queue.example.test", "alice-password")
        entry_id = await queue.enqueue("alice@queue.example.test",
                                       [("rob@remote.example.test", ("FAILURE",), None)], MESSAGE,
                                       envid="env-1")
        # Make the entry look like it was tried once and deferred, so retry has something to undo.
        later = time.time() + 3600
        await server.metadata.write(lambda txn: _postpone(txn, entry_id, later))
        port = server.port("http")
        admin = ("admin", server.initial_admin_password)

        def call(method: str, path: str, auth=admin):
            return http_request(port, method, path, auth=auth)

        scrape = await deferToThread(call, "GET", "/metrics", None)
        assert "\nmailserve_queue_size 1.0\n" in scrape.body.decode()

        listed = await deferToThread(call, "GET", "/api/queue")
        assert listed.status == 200, listed.body
        assert [e["id"] for e in listed.json] == [entry_id]
        assert listed.json[0]["recipients"][0]["address"] == "rob@remote.example.test"

        shown = await deferToThread(call, "GET", f"/api/queue/{entry_id}")
        assert shown.status == 200
        assert shown.json["mail_from"] == "alice@queue.example.test"
        assert shown.json["size"] == len(MESSAGE) and shown.json["envid"] == "env-1"
        assert shown.json["recipients"][0]["status"] == "pending"
        assert shown.json["recipients"][0]["notify"] == ["FAILURE"]
        assert shown.json["next_attempt"] >= later - 1

        before = time.time()
        retried = await deferToThread(call, "POST", f"/api/queue/{entry_id}/retry")
        assert retried.status == 200 and retried.json == {"updated": str(entry_id)}
        assert queue.get(entry_id).next_attempt <= time.time()
        assert queue.get(entry_id).next_attempt >= before - 1

        # Unknown and malformed ids are 404, not 500.
        for method, path in (("GET", "/api/queue/999999"), ("POST", "/api/queue/999999/retry"),
                             ("DELETE", "/api/queue/999999"), ("GET", "/api/queue/not-a-number"),
                             ("GET", "/api/queue/" + "9" * 40)):
            reply = await deferToThread(call, method, path)
            assert reply.status == 404, (method, path, reply.body)
            assert reply.json["error"]["code"] == "not_found"

        # Only an administrator sees the queue.
        user = ("alice@queue.example.test", "alice-password")
        assert (await deferToThread(call, "GET", "/api/queue", user)).status == 403
        assert (await deferToThread(call, "DELETE", f"/api/queue/{entry_id}", user)).status == 403
        assert (await deferToThread(call, "GET", "/api/queue", None)).status == 401

        removed = await deferToThread(call, "DELETE", f"/api/queue/{entry_id}")
        assert removed.status == 200 and removed.json == {"removed": str(entry_id)}
        assert queue.get(entry_id) is None
        assert (await deferToThread(call, "GET", f"/api/queue/{entry_id}")).status == 404
        assert (await deferToThread(call, "DELETE", f"/api/queue/{entry_id}")).status == 404
        assert (await deferToThread(call, "GET", "/api/queue")).json == []
        scrape = await deferToThread(call, "GET", "/metrics", None)
        assert "\nmailserve_queue_size 0.0\n" in scrape.body.decode()
    finally:
        await server.stopService()


def _postpone(txn, entry_id: int, when: float) -> None:
    from dataclasses import replace

    from mailserve.smtp.queue import QueueStore

    entry = QueueStore.get_txn(txn, entry_id)
    QueueStore.update_txn(txn, entry, replace(entry, next_attempt=when, attempts=1, last_error="451 try later"))
