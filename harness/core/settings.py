"""Behaviour Kubernetes leaves to the implementation, as a scenario declares it.
The reference model computes with it, the emulated backend compiles it, a real CNI
has its own."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SelfTraffic(enum.Enum):
    #: Calico (and most CNIs): traffic to the pod's own IP never leaves the pod.
    ALLOWED = "allowed"
    #: Evaluate a pod's traffic to itself like any other traffic.
    POLICY = "policy"


@dataclass(frozen=True)
class ImplementationSettings:
    """Behaviour Kubernetes leaves to the implementation. Defaults are Calico's."""

    self_traffic: SelfTraffic = SelfTraffic.ALLOWED
    #: Calico matches ipBlock against pod IPs too (projectcalico/calico#6634).
    ipblock_matches_pods: bool = True
