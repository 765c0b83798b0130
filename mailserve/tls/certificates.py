"""Certificates for every TLS listener and STARTTLS: the configured ones, per-host SNI ones,
or a self-signed certificate generated on first start so that TLS works with no setup.

One ``CertificateStore`` per server builds one OpenSSL context (with an SNI callback choosing
the certificate by the name the client asked for, RFC 6066 §3) and hands the same context
factory to every listener and every STARTTLS upgrade.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()


def generate_self_signed(hostname: str, cert_path: str, key_path: str, days: int = 825) -> None:
    """Write a self-signed ECDSA P-256 certificate for ``hostname`` (and localhost)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(os.path.dirname(cert_path), exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class _Pair:
    certificate: str
    private_key: str


def _load_pair(pair: _Pair) -> tuple[Any, Any, list[Any]]:
    with open(pair.certificate, "rb") as f:
        pem = f.read()
    with open(pair.private_key, "rb") as f:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
    certs = [
        crypto.load_certificate(crypto.FILETYPE_PEM, block)
        for block in _pem_blocks(pem)
    ]
    if not certs:
        raise ValueError(f"{pair.certificate}: no certificate in the file")
    return certs[0], key, certs[1:]


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    out = []
    for chunk in pem.split(marker)[:-1]:
        start = chunk.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            out.append(chunk[start:] + marker + b"\n")
    return out


def _context(pair: _Pair, min_version: str, ciphers: str) -> SSL.Context:
    cert, key, chain = _load_pair(pair)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION if min_version == "TLSv1.3" else SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
    if ciphers:
        ctx.set_cipher_list(ciphers.encode())
    ctx.use_certificate(cert)
    for extra in chain:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(key)
    ctx.check_privatekey()
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class _ContextFactory:
    """A Twisted server connection creator backed by one prepared OpenSSL context.

    Declaring ``IOpenSSLServerConnectionCreator`` (rather than only having ``getContext``) is
    what Twisted expects of server TLS options; the SNI callback on the context does the rest.
    """

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)


class CertificateStore:
    def __init__(self, default: _Pair, sni: dict[str, _Pair], min_version: str = "TLSv1.2", ciphers: str = "") -> None:
        self.default = default
        self._contexts = {name.lower(): _context(pair, min_version, ciphers) for name, pair in sni.items()}
        context = _context(default, min_version, ciphers)
        if self._contexts:
            context.set_tlsext_servername_callback(self._choose)
        self._factory = _ContextFactory(context)

    @classmethod
    def from_config(cls, config: Any) -> CertificateStore:
        tls = config.tls
        if tls.certificate:
            default = _Pair(tls.certificate, tls.private_key)
        else:
            directory = config.self_signed_dir
            default = _Pair(os.path.join(directory, "self-signed.pem"), os.path.join(directory, "self-signed.key"))
            if not (os.path.exists(default.certificate) and os.path.exists(default.private_key)):
                generate_self_signed(config.server.hostname, default.certificate, default.private_key)
                log.warn(
                    "generated a self-signed certificate for {hostname} in {path}; configure "
                    "tls.certificate for clients to trust it",
                    hostname=config.server.hostname,
                    path=default.certificate,
                )
        sni = {entry.hostname: _Pair(entry.certificate, entry.private_key) for entry in tls.sni}
        return cls(default, sni, tls.min_version, tls.ciphers)

    def _choose(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name:
            return
        name = name.decode("ascii", "replace").lower()
        context = self._contexts.get(name)
        if context is None and "." in name:
            context = self._contexts.get("*." + name.split(".", 1)[1])
        if context is not None:
            connection.set_context(context)

    def context_factory(self) -> Any:
        return self._factory

    def client_options(self, hostname: str | None = None, verify: bool = False) -> Any:
        """Options for outbound TLS (SMTP delivery): opportunistic unless ``verify``."""
        if verify and hostname:
            return ssl.optionsForClientTLS(hostname)
        return ssl.CertificateOptions(verify=False)
