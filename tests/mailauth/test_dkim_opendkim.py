"""Interoperability with OpenDKIM (Debian package opendkim-tools).

``opendkim-testmsg`` verifies through the system resolver (libresolv, port 53, servers
from /etc/resolv.conf).  The test serves the key from the DNS fixture on a private
loopback address at port 53 and runs the tool in its own mount namespace with a
resolv.conf naming that address bind-mounted over /etc/resolv.conf, so nothing outside the
test sees the change.  This needs root (as the test machines and CI run).

Only this direction is tested: ``opendkim-testmsg`` signs with rsa-sha1 alone (no option
selects another algorithm), which RFC 8301 section 3.1 forbids verifiers to accept.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest
import pytest_twisted
from twisted.internet import utils
from twisted.internet.error import CannotListenError

from mailserve.mailauth.dkim import sign_dkim
from tests.dnsfixture import DNSFixtureServer

OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"


@pytest.fixture
def port53_dns():
    """A fixture name server on 127.x.y.z:53 (an address no one else on the machine uses)."""
    rng = random.Random()
    for _attempt in range(10):
        host = f"127.53.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
        try:
            server = DNSFixtureServer().start(host=host, port=53)
            break
        except CannotListenError:  # address in use: try another
            continue
    else:
        pytest.fail("could not bind a DNS fixture to port 53 on any loopback address")
    yield server
    pytest_twisted.blockon(server.stop())


async def run_with_resolver(tmp_path, server, argv, stdin_bytes):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {server.host}\noptions attempts:2 timeout:2\n")
    message_file = tmp_path / "message.eml"
    message_file.write_bytes(stdin_bytes)
    script = 'mount --bind "$1" /etc/resolv.conf && shift && msg="$1" && shift && exec "$@" < "$msg"'
    return await utils.getProcessOutputAndValue(
        "/usr/bin/unshare",
        ["-m", "/bin/sh", "-c", script, "sh", str(resolv), str(message_file), *argv],
        env=dict(os.environ),
    )


def lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
async def test_opendkim_verifies_our_signature(tmp_path, port53_dns, rsa_key, ed25519_key, message, algorithm):
    assert os.path.exists(OPENDKIM_TESTMSG), "install the opendkim-tools package"
    key = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    port53_dns.add("sel._domainkey.example.org", "TXT", key[1])
    signed = sign_dkim(message, "example.org", "sel", key[0], algorithm) + message
    out, err, code = await run_with_resolver(tmp_path, port53_dns, [OPENDKIM_TESTMSG], lf(signed))
    assert (code, err) == (0, b""), (out, err)
    assert ("sel._domainkey.example.org", "TXT") in port53_dns.queries

    tampered = lf(signed).replace(b"numbers are attached", b"numbers are enclosed")
    out, err, code = await run_with_resolver(tmp_path, port53_dns, [OPENDKIM_TESTMSG], tampered)
    assert code != 0
    assert err  # OpenDKIM says why
