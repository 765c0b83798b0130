"""TLS on the SMTP listeners from certificate files in the configuration, chosen per host name
by SNI (RFC 6066 §3), for STARTTLS (RFC 3207) and implicit TLS (RFC 8314)."""

from __future__ import annotations

import smtplib
import socket

import pytest_twisted
from cryptography import x509
from cryptography.x509.oid import NameOID

from mailserve.tls.certificates import generate_self_signed
from tests.smtp.conftest import in_thread, insecure_tls, start


def common_name(der: bytes) -> str:
    certificate = x509.load_der_x509_certificate(der)
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest_twisted.ensureDeferred
async def test_certificates_from_files_chosen_by_sni(tmp_path):
    paths = {}
    for name in ("mail.example.test", "mx.other.test"):
        paths[name] = (str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key"))
        generate_self_signed(name, *paths[name])
    tls = {"certificate": paths["mail.example.test"][0], "private_key": paths["mail.example.test"][1],
           "sni": {"mx.other.test": {"certificate": paths["mx.other.test"][0],
                                     "private_key": paths["mx.other.test"][1]}}}
    server = start(tmp_path, listeners=("smtp", "submissions"), tls=tls)
    try:
        def starttls(name):
            host, port = server.address("smtp")
            with smtplib.SMTP(host, port, timeout=10) as smtp:
                smtp.ehlo("client.test")
                smtp._host = name  # the name smtplib sends as SNI
                code, _ = smtp.starttls(context=insecure_tls())
                return code, common_name(smtp.sock.getpeercert(binary_form=True))

        def implicit(name):
            sock = socket.create_connection(server.address("submissions"), timeout=10)
            with insecure_tls().wrap_socket(sock, server_hostname=name) as tls_sock:
                greeting = tls_sock.recv(200)
                return greeting[:4], common_name(tls_sock.getpeercert(binary_form=True))

        assert await in_thread(starttls, "mx.other.test") == (220, "mx.other.test")
        assert await in_thread(starttls, "mail.example.test") == (220, "mail.example.test")
        assert await in_thread(starttls, "unknown.test") == (220, "mail.example.test")  # the default
        assert await in_thread(implicit, "mx.other.test") == (b"220 ", "mx.other.test")
    finally:
        await server.stopService()
