"""CIDRs as the API server's CEL ``isCIDR`` accepts them.

The ``networks`` items of the network-policy-api CRDs carry
``x-kubernetes-validations: isCIDR(self)``. That function (k8s.io/apiserver
pkg/cel/library/cidr.go, ``parseCIDR``) accepts what Go's ``netip.ParsePrefix``
accepts, except IPv4-mapped IPv6 addresses. ``netip.ParsePrefix`` is stricter
than Python's ``ipaddress`` in three ways checked here: the prefix length must
be given and may not have leading zeros (``/08``), and an IPv6 zone (``%eth0``)
is refused; like Python, it refuses IPv4 octets with leading zeros and accepts
host bits after the mask (``10.0.0.1/8``).
"""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DIGITS = frozenset("0123456789")


def parse_cidr(text: str) -> IPNetwork | None:
    """The network ``text`` denotes (host bits cleared), or None if ``isCIDR``
    would be false for it."""
    address, slash, bits = text.rpartition("/")
    if not slash or not address or not bits or not _DIGITS.issuperset(bits):
        return None
    if len(bits) > 1 and bits[0] == "0":
        return None
    if "%" in address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if int(bits) > ip.max_prefixlen:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return None
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)
