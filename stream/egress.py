"""The egress policy of outbound fetches (item images from events and from the search endpoint).

A URL named by an event or a request is attacker-controlled: without a policy the worker becomes a
proxy into the network it runs in (Redis on 127.0.0.1, a cloud metadata service on 169.254.169.254).
:func:`guarded_client` returns an ``httpx.Client`` whose every TCP connection goes through
:class:`GuardedBackend`, which resolves the host itself, refuses addresses that are not globally
routable (loopback, private RFC 1918 and IPv6 ULA, link-local, multicast, unspecified, reserved,
shared CGNAT space, IPv4-mapped forms of those) unless the host or the address's network is
allowlisted, and connects to the address it checked, so a DNS answer cannot change between the check
and the connect. Redirects are followed by :func:`get_following_redirects`, at most
``max_redirects``, each hop http/https only and checked again at its own connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from stream.egress_policy import EgressPolicy


class EgressRefused(httpcore.ConnectError):
    """The policy refused every address of a host (an ``httpx.ConnectError`` to the caller)."""


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend, resolving and checking each host before it connects."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def _addresses(self, host: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        seen: list[str] = []
        for info in infos:
            ip = str(info[4][0]).split("%")[0]
            if ip not in seen:
                seen.append(ip)
        if self.policy.host_allowed(host, port):
            return seen
        allowed = [ip for ip in seen if self.policy.address_allowed(ipaddress.ip_address(ip))]
        if not allowed:
            raise EgressRefused(f"egress policy refuses {host!r} (resolves to {', '.join(seen)})")
        return allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect to the first reachable allowed address of ``host``."""
        last: Exception | None = None
        for ip in self._addresses(host, port):
            try:
                return self._inner.connect_tcp(ip, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise httpcore.ConnectError(f"cannot connect to {host!r}: {last}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        """Never: unix sockets are not an egress destination."""
        raise EgressRefused("unix sockets are refused by the egress policy")

    def sleep(self, seconds: float) -> None:
        """As httpcore's own backend."""
        self._inner.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool connects through :class:`GuardedBackend`."""

    def __init__(self, policy: EgressPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        ssl_context = httpx.create_ssl_context(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def guarded_client(policy: EgressPolicy, *, timeout_s: float, max_connections: int = 16) -> httpx.Client:
    """An HTTP client whose connections obey ``policy`` (no proxies from the environment, no
    automatic redirects: use :func:`get_following_redirects`)."""
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.Client(
        transport=_GuardedTransport(policy, limits),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
    )


class RedirectRefused(httpx.HTTPError):
    """Too many redirects, or a redirect to a scheme other than http/https."""


@contextmanager
def get_following_redirects(
    client: httpx.Client, url: str, policy: EgressPolicy, headers: dict[str, str] | None = None
) -> Iterator[httpx.Response]:
    """Stream ``GET url``, following at most ``policy.max_redirects`` redirects (http/https only)."""
    for _ in range(policy.max_redirects + 1):
        if not url.lower().startswith(("http://", "https://")):
            raise RedirectRefused(f"redirect to a scheme other than http/https: {url[:200]!r}")
        request = client.build_request("GET", url, headers=headers)
        response = client.send(request, stream=True)
        location = response.headers.get("location")
        if response.is_redirect and location:
            response.close()
            url = urljoin(str(request.url), location)
            continue
        try:
            yield response
        finally:
            response.close()
        return
    raise RedirectRefused(f"more than {policy.max_redirects} redirects")
