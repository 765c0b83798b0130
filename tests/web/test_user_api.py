"""What a user does for themselves over the API: Sieve scripts and spam training.

Each request goes over a real socket to a server in its own process.  A user may act only on
their own account; an administrator on any.
"""

from __future__ import annotations

import pytest

DOMAIN = "self.example.test"
ERIN = (f"erin@{DOMAIN}", "erin-password")
FRED = (f"fred@{DOMAIN}", "fred-password")
SIEVE = f"/api/accounts/erin@{DOMAIN}/sieve"

VACATION = 'require ["fileinto"];\r\nif header :contains "subject" "invoice" {\r\n  fileinto "Bills";\r\n}\r\n'
SPAM = (b"From: \"Prize Team\" <winner@lottery.example>\r\nTo: erin@self.example.test\r\n"
        b"Subject: You have WON a million dollars\r\nMessage-ID: <spam1@lottery.example>\r\n\r\n"
        b"Claim your prize now, send your bank details to claim the lottery winnings today.\r\n")


@pytest.fixture(scope="module")
def users(web_server):
    s = web_server
    assert s.admin("POST", "/api/domains", {"name": DOMAIN}).status == 201
    for login, password in (ERIN, FRED):
        reply = s.admin("POST", "/api/accounts", {"name": login, "password": password, "addresses": [login]})
        assert reply.status == 201, reply.body
    return s


def test_sieve_scripts_lifecycle(users):
    s = users
    assert s.request("GET", SIEVE, auth=ERIN).json == []
    created = s.request("PUT", f"{SIEVE}/bills", {"script": VACATION}, auth=ERIN)
    assert created.status == 201, created.body
    assert created.json == {"name": "bills", "active": False, "script": VACATION}
    assert created.headers["location"] == f"{SIEVE}/bills"
    replaced = s.request("PUT", f"{SIEVE}/bills", {"script": VACATION + "keep;\r\n"}, auth=ERIN)
    assert replaced.status == 200 and replaced.json["script"].endswith("keep;\r\n")
    assert s.request("GET", f"{SIEVE}/bills", auth=ERIN).json["script"] == VACATION + "keep;\r\n"

    activated = s.request("PUT", f"{SIEVE}/bills/active", auth=ERIN)
    assert activated.status == 200 and activated.json == {"name": "bills", "active": True}
    other = s.request("PUT", f"{SIEVE}/other", {"script": "keep;", "activate": True}, auth=ERIN)
    assert other.status == 201 and other.json["active"] is True
    # One script is active at a time (RFC 5804 §2.8).
    assert s.request("GET", SIEVE, auth=ERIN).json == [{"name": "bills", "active": False},
                                                       {"name": "other", "active": True}]
    refused = s.request("DELETE", f"{SIEVE}/other", auth=ERIN)
    assert refused.status == 409 and "active" in refused.json["error"]["message"]
    assert s.request("DELETE", f"{SIEVE}/bills/active", auth=ERIN).status == 409  # not the active one
    assert s.request("DELETE", f"{SIEVE}/other/active", auth=ERIN).json == {"name": "other", "active": False}
    assert s.request("DELETE", f"{SIEVE}/other", auth=ERIN).json == {"removed": "other"}
    assert s.request("GET", SIEVE, auth=ERIN).json == [{"name": "bills", "active": False}]

    for method, path in (("GET", f"{SIEVE}/nope"), ("DELETE", f"{SIEVE}/nope"), ("PUT", f"{SIEVE}/nope/active"),
                         ("DELETE", f"{SIEVE}/nope/active")):
        reply = s.request(method, path, auth=ERIN)
        assert reply.status == 404, (method, path, reply.body)
    # A Unicode name is one name in NFC (RFC 5804 §1.6), addressed percent-encoded.
    assert s.request("PUT", f"{SIEVE}/r%C3%A9sum%C3%A9", {"script": "keep;"}, auth=ERIN).status == 201
    assert s.request("GET", f"{SIEVE}/re%CC%81sume%CC%81", auth=ERIN).json["name"] == "résumé"


def test_a_script_that_does_not_compile_is_400_with_line_and_column(users):
    s = users
    bad = 'require "fileinto";\r\nif header :contains "subject" "x" {\r\n  fileinto;\r\n}\r\n'
    reply = s.request("PUT", f"{SIEVE}/broken", {"script": bad}, auth=ERIN)
    assert reply.status == 400
    error = reply.json["error"]
    assert error["code"] == "invalid_script" and error["field"] == "script"
    assert error["line"] == 3 and error["column"] >= 3
    assert error["message"].startswith("line 3, column ")
    missing_require = s.request("PUT", f"{SIEVE}/broken", {"script": 'fileinto "x";'}, auth=ERIN)
    assert missing_require.status == 400 and missing_require.json["error"]["line"] == 1
    # Nothing was stored.
    assert s.request("GET", f"{SIEVE}/broken", auth=ERIN).status == 404
    assert s.request("PUT", f"{SIEVE}/broken", {"script": 42}, auth=ERIN).json["error"]["field"] == "script"
    assert s.request("PUT", f"{SIEVE}/broken", {"script": "keep;", "x": 1}, auth=ERIN).status == 400
    huge = s.request("PUT", f"{SIEVE}/huge", {"script": "#" + "x" * 70_000 + "\r\nkeep;"}, auth=ERIN)
    assert huge.status == 413 and huge.json["error"]["code"] == "too_large"


def test_scripts_are_private_to_their_account(users):
    s = users
    assert s.request("PUT", f"{SIEVE}/mine", {"script": "keep;"}, auth=ERIN).status == 201
    for method, path, body in (("GET", SIEVE, None), ("GET", f"{SIEVE}/mine", None),
                               ("PUT", f"{SIEVE}/mine", {"script": "discard;"}),
                               ("DELETE", f"{SIEVE}/mine", None), ("PUT", f"{SIEVE}/mine/active", None)):
        reply = s.request(method, path, body, auth=FRED)
        assert reply.status == 403, (method, path)
    assert s.request("GET", f"{SIEVE}/mine", auth=ERIN).json["script"] == "keep;"
    # The administrator may manage anyone's scripts.
    assert s.admin("GET", f"{SIEVE}/mine").json["script"] == "keep;"
    assert s.admin("DELETE", f"{SIEVE}/mine").status == 200
    assert s.request("GET", f"/api/accounts/fred@{DOMAIN}/sieve", auth=FRED).json == []


def test_spam_training_by_the_user_and_the_administrator(users):
    s = users
    path = f"/api/accounts/erin@{DOMAIN}/spam-training"
    learned = s.request("POST", f"{path}/spam", raw=SPAM, content_type="message/rfc822", auth=ERIN)
    assert learned.status == 200, learned.body
    assert learned.json["account"] == ERIN[0] and learned.json["class"] == "spam"
    assert learned.json["status"] == "learned" and learned.json["tokens"] > 5
    again = s.request("POST", f"{path}/spam", raw=SPAM, content_type="message/rfc822", auth=ERIN)
    assert again.json["status"] == "already"
    flipped = s.request("POST", f"{path}/ham", raw=SPAM, content_type="message/rfc822", auth=ERIN)
    assert flipped.json["status"] == "relearned" and flipped.json["class"] == "ham"

    assert s.request("POST", f"{path}/spam", raw=SPAM, content_type="message/rfc822", auth=FRED).status == 403
    assert s.request("POST", "/api/spam-training/spam", raw=SPAM, content_type="message/rfc822",
                     auth=ERIN).status == 403
    by_admin = s.admin("POST", f"{path}/spam", raw=SPAM, content_type="message/rfc822")
    assert by_admin.status == 200 and by_admin.json["account"] == ERIN[0]
    server_wide = s.admin("POST", "/api/spam-training/ham", raw=SPAM.replace(b"spam1", b"spam2"),
                          content_type="message/rfc822")
    assert server_wide.status == 200 and server_wide.json["account"] is None

    assert s.request("POST", f"{path}/spam", {"message": "x"}, auth=ERIN).status == 415
    empty = s.request("POST", f"{path}/spam", raw=b"", content_type="message/rfc822", auth=ERIN)
    assert empty.status == 400 and empty.json["error"]["field"] == "message"
    assert s.request("POST", f"{path}/eggs", raw=SPAM, content_type="message/rfc822", auth=ERIN).status == 404
