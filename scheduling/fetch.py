"""Outbound HTTP for sync (and webhooks): http(s) only, no private targets, bounded.

The host is resolved once; every address it resolves to is checked, and the
connection is made to a vetted address (TLS still verifies the host name), so a
DNS answer that changes between the check and the connect cannot redirect the
request to an internal service. Redirects are not followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings


class FetchError(Exception):
    """The fetch failed; the message is safe to show to the tenant's admin."""


class FetchRefused(FetchError):
    """The URL itself is refused (scheme, private address): trying again will not help."""


@dataclass(frozen=True)
class FetchResponse:
    status: int
    body: bytes


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        address = mapped
    if address.is_loopback:
        return settings.SYNC_FETCH_ALLOW_LOOPBACK
    if address.is_private or address.is_link_local or address.is_reserved:
        return settings.SYNC_FETCH_ALLOW_PRIVATE
    return not (address.is_multicast or address.is_unspecified)


def vetted_address(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"Cannot resolve {host}: {exc.strerror}.") from None
    addresses = {info[4][0] for info in infos}
    for raw in addresses:
        if not _address_allowed(ipaddress.ip_address(raw.split("%")[0])):
            raise FetchRefused(f"{host} resolves to {raw}, a private or local address; refused.")
    return sorted(addresses)[0]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def guarded_request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> FetchResponse:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise FetchRefused("Only http:// and https:// URLs with a host name can be fetched.")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = vetted_address(parts.hostname, port)
    connection_class = _PinnedHTTPS if https else _PinnedHTTP
    connect_timeout = connect_timeout or settings.SYNC_FETCH_CONNECT_TIMEOUT
    conn = connection_class(parts.hostname, port, address, connect_timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    limit = settings.SYNC_FETCH_MAX_BYTES
    try:
        conn.connect()
        conn.sock.settimeout(read_timeout or settings.SYNC_FETCH_READ_TIMEOUT)
        conn.request(
            method, path, body=body, headers={"User-Agent": "scheduler-sync/1", **(headers or {})}
        )
        response = conn.getresponse()
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchError(f"The response is larger than the limit of {limit} bytes.")
        data = response.read(limit + 1)
        if len(data) > limit:
            raise FetchError(f"The response is larger than the limit of {limit} bytes.")
        return FetchResponse(status=response.status, body=data)
    except TimeoutError:
        raise FetchError(f"{parts.hostname} did not answer in time.") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"Fetching {parts.hostname} failed: {exc}.") from None
    finally:
        conn.close()
