"""Where outbound fetches may connect: the egress policy's settings and its address rules.

A pure settings section (no HTTP client here): :mod:`stream.egress` enforces it at every connect.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressPolicy(BaseModel):
    """Where outbound fetches may connect.

    Parameters
    ----------
    allow_hosts
        Host names or IP literals allowed whatever they resolve to, on any port (``images.internal``)
        or on one port (``127.0.0.1:8123``, ``[::1]:8123``), compared case-insensitively: e.g. the
        embedded demo allowlists its own loopback image server.
    allow_networks
        Networks (CIDR) allowed although not globally routable, e.g. ``10.20.0.0/16`` for a
        private image CDN.
    max_redirects
        Redirects followed per fetch; each target is checked like the first URL.
    """

    model_config = ConfigDict(extra="forbid")

    allow_hosts: list[str] = Field(default_factory=list, max_length=1000)
    allow_networks: list[IPNetwork] = Field(default_factory=list, max_length=1000)
    max_redirects: int = Field(default=3, ge=0, le=10)

    def host_allowed(self, host: str, port: int) -> bool:
        """Whether ``host`` (any port) or ``host:port`` is allowlisted."""
        name = host.strip("[]").lower().rstrip(".")
        wanted = {name, f"{name}:{port}", f"[{name}]:{port}"}
        return any(h.lower() in wanted for h in self.allow_hosts)

    def address_allowed(self, address: IPAddress) -> bool:
        """Whether a resolved address may be connected to (globally routable, or allowlisted)."""
        mapped = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
        for ip in (address, mapped) if mapped is not None else (address,):
            if any(ip in net for net in self.allow_networks if net.version == ip.version):
                continue
            if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
                return False
        return True
