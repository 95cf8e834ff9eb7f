"""Addresses the harness plans for pods when no network assigns them (the model
backend), inside the pod range shared with kind + Calico and the emulated backend."""

from __future__ import annotations

import ipaddress

from harness.core.errors import HarnessError
from harness.core.topology import POD_CIDR, Topology

#: Pods of the i-th namespace live in 192.168.(i+1).0/24, from .10 upwards.
_FIRST_HOST = 10


def plan_addresses(topology: Topology) -> dict[str, ipaddress.IPv4Address]:
    """A stable address per endpoint: pods by namespace and order, external hosts
    at their declared address."""
    addresses: dict[str, ipaddress.IPv4Address] = {}
    base = int(POD_CIDR.network_address)
    for i, ns in enumerate(topology.namespaces):
        pods = topology.pods_in(ns.name)
        if i + 1 > 255 or len(pods) + _FIRST_HOST > 255:
            raise HarnessError(f"too many namespaces or pods in {ns.name} to plan addresses (at most 255 namespaces of 245 pods)")
        for j, pod in enumerate(pods):
            addresses[pod.id] = ipaddress.IPv4Address(base + (i + 1) * 256 + _FIRST_HOST + j)
    for ext in topology.externals:
        addresses[ext.id] = ext.ip
    return addresses
