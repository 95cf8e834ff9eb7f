"""Which valid cluster-policy fields a backend can enforce.

The API server accepts peers that not every implementation enforces: node peers
and domain names are experimental, and a backend that ignored one would report
traffic as allowed or blocked without having applied the rule. So each backend
states the peer forms it enforces, and a policy using another one is refused
with the field and the reason (:class:`~harness.core.errors.UnsupportedPolicy`)
before anything is applied.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from harness.core.cluster_policy.objects import AnyPolicy, ClusterPolicy, PeerForm
from harness.core.errors import HarnessError, UnsupportedPolicy
from harness.core.policy import PolicyType

_SELECTIONS = frozenset({PeerForm.NAMESPACES, PeerForm.PODS, PeerForm.NETWORKS})

#: The peer forms each backend that evaluates policies itself enforces. Cluster
#: backends depend on the CNI and its version, and register their own.
BACKEND_PEER_FORMS: Mapping[str, frozenset[PeerForm]] = MappingProxyType({"model": _SELECTIONS, "emulated": _SELECTIONS})

#: Why, for the forms the model and the emulated network lack.
_REASONS = {
    PeerForm.NODES: "a scenario declares no nodes, so there is no node address for a nodes peer to match",
    PeerForm.DOMAIN_NAMES: "a scenario's network has no DNS, so no domain name resolves to one of its endpoints",
}


@dataclass(frozen=True)
class UnsupportedField:
    """A field of a policy that a backend cannot enforce, by its path in the manifest."""

    path: str
    reason: str


def unsupported_fields(
    policy: AnyPolicy,
    backend: str,
    supported: Collection[PeerForm] | None = None,
    named_ports: str | None = None,
) -> list[UnsupportedField]:
    """Every field of ``policy`` that ``backend`` cannot enforce (none for a
    NetworkPolicy). ``supported`` overrides the backend's registered peer forms;
    ``named_ports``, when given, is why the backend cannot enforce named ports (a CNI
    version whose converter ignores them), and every named port is reported with it."""
    if not isinstance(policy, ClusterPolicy):
        return []
    if supported is None:
        if backend not in BACKEND_PEER_FORMS:
            known = ", ".join(sorted(BACKEND_PEER_FORMS))
            raise HarnessError(
                f"no record of which cluster-policy peers backend {backend} enforces (known: {known}); pass them explicitly"
            )
        supported = BACKEND_PEER_FORMS[backend]
    found = []
    for direction, peer_key in ((PolicyType.INGRESS, "from"), (PolicyType.EGRESS, "to")):
        for i, rule in enumerate(policy.rules(direction)):
            for j, peer in enumerate(rule.peers):
                if peer.form not in supported:
                    reason = _REASONS.get(peer.form, f"it does not enforce {peer.form.value} peers")
                    path = f"spec.{direction.value.lower()}[{i}].{peer_key}[{j}].{peer.form.value}"
                    found.append(UnsupportedField(path, reason))
            if named_ports is None:
                continue
            ports_key, named_key = ("ports", "namedPort") if policy.kind.is_v1alpha1 else ("protocols", "destinationNamedPort")
            for k, port in enumerate(rule.ports or ()):
                if port.name is not None:
                    found.append(
                        UnsupportedField(f"spec.{direction.value.lower()}[{i}].{ports_key}[{k}].{named_key}", named_ports)
                    )
    return found


def check_supported(policies: Iterable[AnyPolicy], backend: str, supported: Collection[PeerForm] | None = None) -> None:
    """Raise :class:`UnsupportedPolicy` for the first field ``backend`` cannot enforce."""
    for policy in policies:
        for problem in unsupported_fields(policy, backend, supported):
            raise UnsupportedPolicy(backend, policy.source or "<inline>", policy.ref, problem.path, problem.reason)


def priority_ties(policies: Iterable[ClusterPolicy]) -> list[tuple[ClusterPolicy, ClusterPolicy]]:
    """Pairs of policies in the same tier with the same priority. Upstream lets an
    implementation apply either first where both match; the harness orders them
    by name, which a real CNI need not do, so a report can warn about each pair."""
    ordered = sorted(policies, key=lambda p: (p.tier.value, p.priority, p.name, p.kind.value))
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :] if (a.tier, a.priority) == (b.tier, b.priority)]
