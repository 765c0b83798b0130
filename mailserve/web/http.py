"""HTTP plumbing shared by every web part: bounded requests, client addresses, JSON replies.

twisted.web buffers a request body before the resource sees it, so the size limit must be applied
while the body arrives: :class:`BoundedRequest` answers ``413`` (RFC 9110 §15.5.14) and closes the
connection as soon as the declared ``Content-Length`` or the received chunks pass the limit, so a
hostile client cannot make the server buffer gigabytes.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from twisted.web.server import Request, Site

#: Request bodies of the admin API are small JSON documents.
MAX_API_BODY = 1 << 20
#: Standard security headers on every response (OWASP Secure Headers project).
SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
}


class BoundedRequest(Request):
    """A request whose body may not exceed the site's ``max_request_size``."""

    _refused = False
    _received = 0

    def _limit(self) -> int:
        return getattr(self.channel.site, "max_request_size", MAX_API_BODY) if self.channel else MAX_API_BODY

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        transport = self.channel.transport
        body = json.dumps({"error": {"code": "too_large", "message":
                                     f"the request body is larger than {self._limit()} bytes"}}).encode()
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        transport.loseConnection()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self._refuse()
            # Keep the parser consistent without buffering: the connection is closing anyway.
            super().gotLength(0)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)


class MailserveSite(Site):
    """The twisted.web site of one HTTP listener."""

    requestFactory = BoundedRequest
    displayTracebacks = False

    def __init__(self, resource: Any, max_request_size: int, timeout: float = 60.0) -> None:
        super().__init__(resource, timeout=timeout)
        self.max_request_size = max_request_size

    def log(self, request: Request) -> None:
        """Access lines go through twisted.logger at debug level, not to a separate file."""


def client_ip(request: Request, trusted_proxies: tuple[Any, ...] = ()) -> str:
    """The client's address: the peer, or the last untrusted hop of X-Forwarded-For when the peer
    is a trusted proxy (RFC 7239 §5.2 semantics; the right-most untrusted entry cannot be forged)."""
    peer = getattr(request.getClientAddress(), "host", "") or ""
    if not trusted_proxies or not _in(peer, trusted_proxies):
        return peer
    forwarded = header(request, b"x-forwarded-for")
    if not forwarded:
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",")]):
        if not _in(hop, trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def _in(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def is_secure(request: Request, trusted_proxies: tuple[Any, ...] = ()) -> bool:
    """Whether the client's connection is encrypted: TLS here, or TLS at a trusted proxy."""
    if request.isSecure():
        return True
    peer = getattr(request.getClientAddress(), "host", "") or ""
    if trusted_proxies and _in(peer, trusted_proxies):
        return header(request, b"x-forwarded-proto").lower() == "https"
    return False


def header(request: Request, name: bytes) -> str:
    """A request header as text ("" when absent); undecodable bytes become U+FFFD."""
    value = request.getHeader(name)
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def json_body(request: Request, status: int, value: Any) -> bytes:
    """Set the status and JSON content type, return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(request: Request, status: int, code: str, message: str, field: str | None = None,
               details: dict[str, Any] | None = None) -> bytes:
    """The JSON error of every API reply: ``{"error": {"code", "message", "field"?, ...details}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    if details:
        error.update(details)
    return json_body(request, status, {"error": error})


def add_security_headers(request: Request) -> None:
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)
