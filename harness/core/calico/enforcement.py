"""What enforcing staged policies would change in the policies in force.

Enforcing a staged policy is what a team does when it moves from audit to enforce:
a ``Set`` applies its enforced form (adding or replacing the object of the same kind
and name), a ``Delete`` deletes that object. The result feeds the reference model
through :func:`harness.core.calico.conversion.model_policies`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from harness.core.calico.policy import CalicoPolicy, EnforcedKind, PolicyKey, StagedPolicy, check_unique
from harness.core.policy import NetworkPolicy


@dataclass(frozen=True)
class EnforcedPolicies:
    """The policies in force: Kubernetes NetworkPolicies by ``namespace/name`` and
    Calico policies (from promoted staged ones) by key."""

    kubernetes: Mapping[str, NetworkPolicy] = field(default_factory=dict, hash=False)
    calico: Mapping[PolicyKey, CalicoPolicy] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kubernetes", MappingProxyType(dict(self.kubernetes)))
        object.__setattr__(self, "calico", MappingProxyType(dict(self.calico)))

    def get(self, key: PolicyKey) -> NetworkPolicy | CalicoPolicy | None:
        if key.kind is EnforcedKind.KUBERNETES_NETWORK_POLICY:
            return self.kubernetes.get(key.ref)
        return self.calico.get(key)

    def keys(self) -> tuple[PolicyKey, ...]:
        k8s = [kubernetes_key(p) for p in self.kubernetes.values()]
        return tuple(sorted([*k8s, *self.calico], key=PolicyKey.sort_key))

    def with_policy(self, policy: NetworkPolicy | CalicoPolicy) -> EnforcedPolicies:
        if isinstance(policy, NetworkPolicy):
            return replace(self, kubernetes={**self.kubernetes, policy.ref: policy})
        return replace(self, calico={**self.calico, policy.key: policy})

    def without(self, key: PolicyKey) -> EnforcedPolicies:
        if key.kind is EnforcedKind.KUBERNETES_NETWORK_POLICY:
            return replace(self, kubernetes={k: v for k, v in self.kubernetes.items() if k != key.ref})
        return replace(self, calico={k: v for k, v in self.calico.items() if k != key})


def kubernetes_key(policy: NetworkPolicy) -> PolicyKey:
    return PolicyKey(EnforcedKind.KUBERNETES_NETWORK_POLICY, policy.namespace, policy.name)


class Effect(enum.Enum):
    ADD = "add"
    REPLACE = "replace"
    REMOVE = "remove"
    #: A Delete whose policy is not in force: enforcing it changes nothing.
    NOTHING = "nothing"


@dataclass(frozen=True)
class StagedChange:
    staged: StagedPolicy
    effect: Effect

    def __str__(self) -> str:
        target = self.staged.target
        if self.effect is Effect.NOTHING:
            return f"{self.staged} would delete {target}, which is not in force"
        verb = {Effect.ADD: "add", Effect.REPLACE: "replace", Effect.REMOVE: "delete"}[self.effect]
        return f"{self.staged} would {verb} {target}"


def enforce(current: EnforcedPolicies, staged: Iterable[StagedPolicy]) -> tuple[EnforcedPolicies, tuple[StagedChange, ...]]:
    """The policies in force once every staged policy is enforced (as a team does
    when it moves from audit to enforce), with what each one changes."""
    staged = tuple(staged)
    check_unique(staged)
    result = current
    changes = []
    for policy in staged:
        present = current.get(policy.target) is not None
        if policy.enforced is None:
            result = result.without(policy.target)
            changes.append(StagedChange(policy, Effect.REMOVE if present else Effect.NOTHING))
        else:
            result = result.with_policy(policy.enforced)
            changes.append(StagedChange(policy, Effect.REPLACE if present else Effect.ADD))
    return result, tuple(changes)


def promote(current: EnforcedPolicies, staged: StagedPolicy) -> EnforcedPolicies:
    """``promote:`` of one staged policy: its enforced form replaces it."""
    return enforce(current, [staged])[0]
