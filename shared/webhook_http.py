"""Webhook HTTP: the address rule (server-side request forgery), signatures, and one
delivery attempt with a deadline, no redirects and a bounded read.

The address rule is checked at registration and again at each attempt against the
address the name resolves to at that moment; the attempt then connects to that very
address (with the URL's Host header and TLS server name), so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot lead it elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from shared.config import Settings

SIGNATURE_HEADER = "X-Orchestrator-Signature"
EVENT_ID_HEADER = "X-Orchestrator-Event-Id"
# What is read of a response at most: enough for an error message, never a huge body.
MAX_RESPONSE_BYTES = 1024
USER_AGENT = "orchestrator-webhooks/1"


class AddressRefused(ValueError):
    """The URL is not one the server may call."""


def check_url_shape(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with a host, else AddressRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"Not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("Must be an http:// or https:// URL.")
    if not parts.hostname:
        raise AddressRefused("The URL must name a host.")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("The URL must not carry credentials (sign with the secret).")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def private_allowed(settings: Settings) -> bool:
    return settings.webhook_allow_private or not settings.is_production


def resolve(host: str, port: int, settings: Settings) -> str:
    """The address to connect to: the first the name resolves to, refused (with every
    address it resolves to) if one of them is not public and the rule applies."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"{host} does not resolve: {exc}") from None
    addresses = [info[4][0] for info in infos]
    if not private_allowed(settings):
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise AddressRefused(
                f"{host} resolves to a loopback, private or link-local address "
                f"({', '.join(sorted(set(refused)))}); set WEBHOOK_ALLOW_PRIVATE=true to allow it"
            )
    return addresses[0]


def check_url(url: str, settings: Settings) -> None:
    """At registration: the shape always; the addresses when the rule applies."""
    _scheme, host, port = check_url_shape(url)
    if not private_allowed(settings):
        resolve(host, port, settings)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


@dataclass
class Outcome:
    status_code: int | None
    duration_ms: int
    error: str | None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Timeouts, connection errors, 5xx and 429; never another 4xx (nor 3xx: redirects
        are not followed, and following them later would not change)."""
        if self.status_code is None:
            return self.error is not None and not self.error.startswith("refused:")
        return self.status_code >= 500 or self.status_code == 429


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_TLS = ssl.create_default_context()  # loading the CA certificates is slow: once


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=_TLS)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        # the certificate is checked against the URL's host name, not the address
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> Outcome:
    """One attempt: resolve and check, connect to that address, send, read the status
    line and headers and at most MAX_RESPONSE_BYTES, all within WEBHOOK_TIMEOUT_SECONDS."""
    started = time.monotonic()
    timeout = settings.webhook_timeout_seconds

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        scheme, host, port = check_url_shape(url)
        address = resolve(host, port, settings)
    except AddressRefused as exc:
        return Outcome(None, elapsed_ms(), f"refused: {exc}")
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, port, address, timeout)
    try:
        connection.request("POST", target, body=body, headers=headers)
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            raise TimeoutError("timed out")
        connection.sock.settimeout(remaining)
        response = connection.getresponse()
        excerpt = _read_some(response, started, timeout)
        status = response.status
        error = None if 200 <= status < 300 else _describe(status, response.reason, excerpt)
        retry_after = _retry_after(response.getheader("Retry-After"))
        return Outcome(status, elapsed_ms(), error, retry_after)
    except TimeoutError:
        return Outcome(None, elapsed_ms(), f"timed out after {timeout:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(None, elapsed_ms(), f"connection error: {type(exc).__name__}: {exc}")
    finally:
        connection.close()  # never reads the rest of a body


def _read_some(response: http.client.HTTPResponse, started: float, timeout: float) -> bytes:
    remaining = timeout - (time.monotonic() - started)
    if remaining <= 0:
        return b""
    try:
        return response.read1(MAX_RESPONSE_BYTES) if not response.closed else b""
    except (OSError, http.client.HTTPException):
        return b""


def _describe(status: int, reason: str, excerpt: bytes) -> str:
    text = excerpt.decode("utf-8", "replace").strip()
    if 300 <= status < 400:
        return f"HTTP {status} {reason}: redirects are not followed"
    return f"HTTP {status} {reason}" + (f": {text[:200]}" if text else "")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())
