"""Where webhooks may be sent: public addresses, and the private networks the operator allows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from app.settings import Networks


@dataclass(frozen=True, slots=True)
class Destinations:
    """A tenant's webhook URL is a request this deployment makes on its behalf: without a
    limit, any tenant could make it POST to the cloud's metadata service, to localhost, or
    into the private network (server-side request forgery). Only public (global) addresses
    are reachable, plus the networks listed in SLUICE_WEBHOOK_PRIVATE_NETWORKS."""

    allowed: Networks = ()

    def permits(self, address: str) -> bool:
        ip: IPv4Address | IPv6Address = ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        return ip.is_global or any(ip in network for network in self.allowed)

    def refusal(self, host: str, addresses: Iterable[str]) -> str | None:
        """Why `host` may not be sent to, given what it resolves to; None if one of them may be reached."""
        found = sorted(set(addresses))
        if not found:
            return f"{host} does not resolve to any address"
        if any(self.permits(address) for address in found):
            return None
        return (
            f"{host} is {', '.join(found)}: not a public address, and not in SLUICE_WEBHOOK_PRIVATE_NETWORKS"
            if found != [host]
            else f"{host} is not a public address, and not in SLUICE_WEBHOOK_PRIVATE_NETWORKS"
        )


def literal(host: str) -> bool:
    """Is the host an IP address rather than a name?"""
    try:
        ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
