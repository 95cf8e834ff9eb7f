"""Why a probe ended as it did, as the kernel told it: which pod chains the packet
met, and what each did with it.

A packet from pod S to endpoint D meets S's egress chain if S is isolated for
egress, then D's ingress chain if D is a pod isolated for ingress. Each chain
either admits it by one policy rule (named as the compiler's rule comments name
it: ``x/allow-db ingress[0]``) or drops it, because no rule of the policies that
isolate the pod allows it. A direction without a chain is not isolated.

Cluster policies add their tiers around those chains: an Admin or Baseline rule
may admit or deny the packet itself (``denied by ClusterNetworkPolicy/x egress[0]
(Deny, Admin tier, priority 10)``), and an Admin Pass hands it on (``passed on
by ...``).

The words follow the reference model's explanation
(:meth:`harness.model.ReferenceModel.explain`): "ingress of y/b isolated by y/deny,
no rule allows it".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.core.policy import PolicyType


class ChainAction(enum.Enum):
    NOT_ISOLATED = "not isolated"
    ADMITTED = "admitted"
    DROPPED = "dropped"


@dataclass(frozen=True)
class ChainVerdict:
    """What one direction of one pod did with the probe's packet.

    ``policies``: the NetworkPolicies isolating ``pod`` in ``direction`` (empty
    when not isolated). ``rule``: the rule that admitted it (``x/p ingress[0]``,
    or a cluster policy's rule as :meth:`ClusterPolicy.describe_rule` names it),
    or the cluster policy's Deny rule that dropped it; empty when NetworkPolicies
    dropped it, it was not isolated, or the admitting rule's log message was not
    seen. ``passed``: the Admin-tier Pass rule that handed it on to the next tier.
    """

    direction: PolicyType
    pod: str
    action: ChainAction
    policies: tuple[str, ...] = ()
    rule: str = ""
    passed: str = ""

    def text(self) -> str:
        side = f"{self.direction.value.lower()} of {self.pod}"
        passed = f" (passed on by {self.passed})" if self.passed else ""
        if self.action is ChainAction.NOT_ISOLATED:
            return f"{side} not isolated{passed}"
        if self.action is ChainAction.ADMITTED:
            if not self.rule:
                return f"{side} admitted (the admitting rule was not seen){passed}"
            return f"{side} admitted by {self.rule}{passed}"
        if self.rule:
            return f"{side} denied by {self.rule}{passed}"
        return f"{side} isolated by {', '.join(self.policies)}{passed}, no rule allows it"


@dataclass(frozen=True)
class PolicyTrace:
    """The chains a probe's packet met, in order, and a note for packets that
    meet none (a pod's traffic to itself that never leaves it)."""

    verdicts: tuple[ChainVerdict, ...] = ()
    note: str = ""

    @property
    def drop(self) -> ChainVerdict | None:
        """The chain that dropped the packet, if one did."""
        return next((v for v in self.verdicts if v.action is ChainAction.DROPPED), None)

    def text(self) -> str:
        """One line for the observation's detail. A drop names only the chain that
        dropped (the packet met no chain after it)."""
        drop = self.drop
        if drop is not None:
            return f"dropped: {drop.text()}"
        parts = [v.text() for v in self.verdicts]
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)
