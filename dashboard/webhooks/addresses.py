"""Where a webhook may point: checked when it is configured and again on
every connection.

A webhook makes the dashboard's workers send requests to a URL someone typed,
from inside the network the dashboard runs in. The cloud's instance metadata
service (169.254.169.254, fd00:ec2::254) answers there with the workers' AWS
credentials, so link-local and metadata addresses are refused always, and
loopback (the dashboard's own host) is refused in production. Private
networks stay allowed: receivers on the company's own network (a chat relay,
a CI server) are the usual case, and only admins configure webhooks.

The check at configuration time gives a clear message; the check at
connection time is the one that holds, because a host name may resolve to
something else later (DNS rebinding): the worker connects only to the
addresses it has just checked.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: EC2/ECS/GCP/Azure metadata endpoints
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::/32",  # EC2's IPv6 metadata, DNS and NTP endpoints
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
]
_NOT_UNICAST = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::/128", "ff00::/8")
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA_NAMES = {
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
}


class WebhookUrlError(ValueError):
    """A webhook URL that may not be used; the message says why."""


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64), else itself:
    ::ffff:169.254.169.254 reaches the same metadata service."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_problem(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why a webhook may not connect to ``address``, or None if it may."""
    plain = _embedded_ipv4(address)
    if isinstance(plain, ipaddress.IPv6Address) and plain.scope_id:
        plain = ipaddress.IPv6Address(str(plain).split("%", 1)[0])
    if any(plain in n for n in _METADATA_NETWORKS if n.version == plain.version):
        return "is a link-local or cloud metadata address"
    if any(plain in n for n in _NOT_UNICAST if n.version == plain.version):
        return "is not a unicast address"
    if plain.is_loopback and not allow_loopback:
        return "is a loopback address (allowed only outside production)"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal address resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def checked_addresses(host: str, port: int, *, allow_loopback: bool) -> list[IPAddress]:
    """The addresses of ``host``, or WebhookUrlError if any one is refused
    (a name with one good and one bad address is refused as a whole)."""
    if host.lower().rstrip(".") in _METADATA_NAMES:
        raise WebhookUrlError(f"{host} is a cloud metadata service")
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookUrlError(f"{host} does not resolve: {exc}") from None
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem:
            shown = "" if host == str(address) else f" resolves to {address}, which"
            raise WebhookUrlError(f"{host}{shown} {problem}")
    if not addresses:
        raise WebhookUrlError(f"{host} does not resolve")
    return addresses


@dataclass(frozen=True)
class UrlCheck:
    url: str
    note: str = ""


def check_url(url: str, *, allow_loopback: bool) -> UrlCheck:
    """Validate a webhook URL: http(s), a host, a port, no refused address.

    A host name that does not resolve right now is accepted with a note
    (DNS may not be set up yet); connecting is checked again on every attempt.
    """
    url = url.strip()
    if not url:
        raise WebhookUrlError("enter the receiver's URL")
    if len(url) > 2000:
        raise WebhookUrlError("the URL is longer than 2000 characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise WebhookUrlError("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"not a URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise WebhookUrlError("the URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise WebhookUrlError("the URL has no host")
    if parts.fragment:
        raise WebhookUrlError("the URL must not have a #fragment (it is never sent)")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        checked_addresses(host, port, allow_loopback=allow_loopback)
    except WebhookUrlError as exc:
        if "does not resolve" in str(exc):
            return UrlCheck(url, note=f"{exc}; deliveries fail until it does")
        raise
    return UrlCheck(url)


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to checked addresses: the
    name is resolved here, every address is checked, and the socket is opened
    to the checked address itself, so no second lookup can swap it. TLS still
    verifies the certificate against the URL's host name."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = checked_addresses(host, port, allow_loopback=self.allow_loopback)
        except WebhookUrlError as exc:
            raise httpcore.ConnectError(f"refused: {exc}") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s of CPU: once per process, not per
    # attempt (an SSLContext is safe to share between threads).
    return httpx.create_ssl_context()


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses GuardedBackend."""

    def __init__(self, *, allow_loopback: bool) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False, retries=0)
        # httpx builds its pool without a way to pass a network backend, so
        # it is replaced; the tests that connect to refused addresses fail if
        # this ever stops taking effect.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=1,
            retries=0,
            network_backend=GuardedBackend(allow_loopback=allow_loopback),
        )
