"""Which network addresses a dataset URL may reach: the SSRF guard, applied after DNS resolution.

A URL someone hands us must not make this machine talk to itself, its private network or a cloud
metadata service. Host names are resolved here, every address is checked, and the caller connects to
the checked address (never resolving again), so a DNS answer cannot change between check and connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hubferry.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolve(host, port)`` returns the host's addresses as strings; tests inject their own.
Resolver = Callable[[str, int], list[str]]

#: Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Azure wireserver): never
#: reachable, even when an allow-list entry would cover them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)

_ALLOW_HINT = "use a public URL, or add the host to HUBFERRY_FETCH_ALLOW_HOSTS if you trust it"


def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 zone id names an interface, not an address
        if address not in found:
            found.append(address)
    return found


def _embedded(ip: IPAddress) -> IPAddress:
    """The IPv4 address hidden in an IPv4-mapped, 6to4 or Teredo IPv6 address, else ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from (e.g. "a loopback address"), or ``None`` for a public address."""
    for candidate in dict.fromkeys((_embedded(ip), ip)):  # the embedded IPv4 address names the real target
        if candidate in METADATA_ADDRESSES:
            return "a cloud metadata address"
        checks = (
            (candidate.is_unspecified, "an unspecified address"),
            (candidate.is_loopback, "a loopback address"),
            (candidate.is_link_local, "a link-local address"),
            (candidate.is_multicast, "a multicast address"),
            (candidate.is_reserved, "a reserved address"),
            (candidate.is_private, "a private address"),
            (not candidate.is_global, "not a public address"),
        )
        for hit, reason in checks:
            if hit:
                return reason
    return None


@dataclass(frozen=True)
class AllowList:
    """Hosts (names, addresses or networks) that may be fetched from although they are not public."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Entries of ``fetch_allow_hosts``: ``127.0.0.1``, ``10.0.0.0/8``, ``::1`` or ``files.intranet``."""
        names: set[str] = set()
        networks = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.networks)


def choose_address(host: str, port: int, allow: AllowList, resolve: Resolver, *, url: str,
                   setting: str = "HUBFERRY_FETCH_ALLOW_HOSTS") -> str:
    """Resolve ``host`` and return the address to connect to, once every address it has passed the guard.

    Every resolved address is checked (not only the first), so a name cannot mix a public address with a
    private one and hope the client picks the latter.

    Args:
        setting: the allow-list a refusal's hint names (the one ``allow`` was read from).

    Raises:
        ValidationError: the host does not resolve, or resolves to a forbidden address
            (``code="refused_address"``).
    """
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a) for a in resolve(host, port)]
        except (OSError, UnicodeError, ValueError) as exc:
            raise ValidationError(f"cannot resolve host {host}: {exc}", category="network", url=url, code="fetch",
                                  hint="check the URL's host name") from None
        if not addresses:
            raise ValidationError(f"host {host} has no address", category="network", url=url, code="fetch",
                                  hint="check the URL's host name")
    name_allowed = literal is None and allow.allows_name(host)
    for ip in addresses:
        reason = forbidden_reason(ip)
        if reason == "a cloud metadata address" or (
            reason and not name_allowed and not allow.allows_address(ip) and not allow.allows_name(str(ip))
        ):
            shown = host if literal is not None else f"{host} ({ip})"
            raise ValidationError(
                f"refused to fetch from {shown}: {reason}", url=url, code="refused_address",
                hint=(_ALLOW_HINT.replace("HUBFERRY_FETCH_ALLOW_HOSTS", setting)
                      if reason != "a cloud metadata address" else "use a public URL"),
            )
    return str(addresses[0])
