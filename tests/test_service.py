"""Assembling, embedding, starting and stopping whole servers."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.application.service import IService, MultiService

from mailserve.service import MailServer, StartupError, makeService
from tests.e2e.harness import make_config


def test_make_service_returns_an_iservice(tmp_path):
    service = makeService(make_config(tmp_path))
    assert IService.providedBy(service)
    assert isinstance(service, MultiService)


@pytest_twisted.inlineCallbacks
def test_embedded_under_another_service_tree(tmp_path):
    parent = MultiService()
    server = makeService(make_config(tmp_path))
    server.setServiceParent(parent)
    parent.privilegedStartService()
    parent.startService()
    assert server.running
    # The embedded server works: it bootstrapped its administrator and its core appends.
    assert server.initial_admin_password
    admin = server.directory.get_account("admin")
    inbox = server.core.find_mailbox(admin.id, "INBOX")
    result = yield server.core.append(admin.id, inbox.id, b"Subject: embedded\r\n\r\nhi\r\n")
    assert result.uid == 1
    yield parent.stopService()
    assert not server.running
    # Stopped cleanly: the data directory can be opened by a new server at once.
    again = MailServer(make_config(tmp_path))
    again.startService()
    assert again.initial_admin_password is None
    admin = again.directory.get_account("admin")
    assert again.core.find_mailbox(admin.id, "INBOX").messages == 1
    yield again.stopService()


@pytest_twisted.inlineCallbacks
def test_second_instance_on_same_data_directory_refused(tmp_path):
    first = MailServer(make_config(tmp_path))
    first.startService()
    second = MailServer(make_config(tmp_path))
    with pytest.raises(StartupError, match="already running on data directory"):
        second.privilegedStartService()
    assert not second.running
    yield first.stopService()
    # Once the first stopped, the data directory is free again.
    third = MailServer(make_config(tmp_path))
    third.startService()
    yield third.stopService()
