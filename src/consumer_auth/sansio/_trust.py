"""Which client address a request comes from: the peer, or ``X-Forwarded-For`` behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ._validate import describe, expect_str_list, fail

__all__ = ["TrustedProxies"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> IPAddress | None:
    """An address as written in ``X-Forwarded-For`` or ``REMOTE_ADDR`` (a port is tolerated)."""
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            # fe80::1%<anything>: a zone names an interface of the sender's own host, and its text is the
            # client's choice (it would reach logs verbatim). Not an address a proxy appends.
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed (the ``trusted_proxies`` setting).

    Args:
        networks: Addresses or CIDR networks (``10.0.0.0/8``, ``127.0.0.1``, ``2001:db8::/32``).

    Raises:
        ConfigError: at ``trusted_proxies[i]`` for anything that is not an address or a network.
    """

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[str] = ()) -> None:
        found: list[IPNetwork] = []
        for index, text in enumerate(expect_str_list(tuple(networks), "trusted_proxies", nonempty=False)):
            try:
                found.append(ipaddress.ip_network(text.strip(), strict=True))
            except ValueError as error:
                why = "host bits set" if "host bits" in str(error) else "not an IP address or CIDR network"
                fail(
                    f"trusted_proxies[{index}]",
                    f"expected an IP address or network, got {describe(text)} ({why})",
                )
        self.networks = tuple(found)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IPAddress) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: tuple[str, ...]) -> str | None:
        """The client address of a request that came from ``peer`` with these ``X-Forwarded-For`` values.

        Without trusted proxies, or from an untrusted peer, it is the peer itself. From a trusted peer,
        ``X-Forwarded-For`` is read from the right (the hop nearest to us), skipping trusted proxies; the
        first address that is not a trusted proxy is the client. A malformed entry stops the walk: the
        last trusted hop is then taken as the client, since what is left of it is the client's own say.
        """
        if peer is None or not forwarded_for or not self.networks:
            return peer
        address = _address(peer)
        if address is None:
            return peer
        if not self.trusts(address):
            return str(address)
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            claimed = _address(hop)
            if claimed is None:
                break
            address = claimed
            if not self.trusts(address):
                break
        return str(address)
