"""Reference model of Kubernetes NetworkPolicy v1 semantics.

Given a topology (with the labels in force), the policies in force and every
endpoint's address, the model says for each (source pod, destination, port/protocol)
whether traffic is allowed. It is pure: no network, no cluster, no pytest.

Semantics (networking.k8s.io/v1):

* A pod is isolated for ingress (egress) when at least one policy in its namespace
  selects it and lists that direction in ``policyTypes`` (defaulted by the parser:
  Ingress always, Egress when egress rules exist).
* An isolated pod accepts (sends) only what some rule of some selecting policy of
  that direction allows: the union of all policies. Traffic must be allowed by the
  source's egress side *and* the destination's ingress side.
* A peer with only ``podSelector`` selects pods of the policy's namespace; only
  ``namespaceSelector``, every pod of the matching namespaces; both in one peer, pods
  matching both. An absent or empty ``from``/``to`` matches every peer (external
  hosts too); absent or empty ``ports`` every port and protocol; a port without a
  number every port of its protocol; ``endPort`` a range; a named port is resolved
  against the destination pod (never against an external host).
* Left to the implementation, and set by :class:`ImplementationSettings` (defaults follow
  Calico): whether a pod always reaches itself, and whether ``ipBlock`` matches pod
  addresses as well as addresses outside the cluster.

Cluster-scoped policies of the network-policy-api (ClusterNetworkPolicy, and the
v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy) add two tiers around
NetworkPolicies, per direction (docs/cluster-policies.md): the Admin tier decides
first (Accept or Deny is final; Pass and no match go on); then, for a pod isolated
by NetworkPolicies in that direction, NetworkPolicies decide; for any other pod the
Baseline tier decides (Deny blocks; Accept, Pass and no match allow).

The computation is vectorised (one boolean matrix per port/protocol) so that it
scales to clusters of thousands of pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.core.cluster_policy import Action, ClusterPeer, ClusterPolicy, PodSet, Tier
from harness.core.errors import HarnessError
from harness.core.matrix import ALLOWED_CODE, BLOCKED_CODE, NOT_PROBED, Cell, CellSet, Observation, Outcome, ReachabilityMatrix
from harness.core.policy import IPBlock, NetworkPolicy, Peer, PolicyPort, PolicyType, Rule
from harness.core.selectors import LabelSelector, Operator
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.topology import ExternalHost, PodSpec, PortProtocol, Protocol, Topology
from harness.model.services import destination_observation, explain_destination
from harness.model.tiers import ClusterTiers

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Admission:
    """What one policy admits on one port: a union of blocks ``rows x columns``
    (see :meth:`ReferenceModel.admission`)."""

    ingress: tuple[tuple[Mask, Mask], ...] = ()
    egress: tuple[tuple[Mask, Mask], ...] = ()


class _LabelIndex:
    """Boolean vectors over a list of label sets, to evaluate selectors in bulk."""

    def __init__(self, label_sets: Sequence[Mapping[str, str]]) -> None:
        self.size = len(label_sets)
        self._pairs: dict[tuple[str, str], Mask] = {}
        self._keys: dict[str, Mask] = {}
        for i, labels in enumerate(label_sets):
            for key, value in labels.items():
                self._pairs.setdefault((key, value), np.zeros(self.size, bool))[i] = True
                self._keys.setdefault(key, np.zeros(self.size, bool))[i] = True
        self._cache: dict[LabelSelector, Mask] = {}

    def _pair(self, key: str, value: str) -> Mask:
        found = self._pairs.get((key, value))
        return found if found is not None else np.zeros(self.size, bool)

    def _key(self, key: str) -> Mask:
        found = self._keys.get(key)
        return found if found is not None else np.zeros(self.size, bool)

    def select(self, selector: LabelSelector) -> Mask:
        cached = self._cache.get(selector)
        if cached is not None:
            return cached
        mask = np.ones(self.size, bool)
        for key, value in selector.match_labels.items():
            mask &= self._pair(key, value)
        for req in selector.match_expressions:
            if req.operator is Operator.EXISTS:
                mask &= self._key(req.key)
            elif req.operator is Operator.DOES_NOT_EXIST:
                mask &= ~self._key(req.key)
            else:
                any_value = np.zeros(self.size, bool)
                for value in req.values:
                    any_value |= self._pair(req.key, value)
                mask &= any_value if req.operator is Operator.IN else ~any_value
        self._cache[selector] = mask
        return mask


class ReferenceModel:
    """Evaluate policies over a topology. Build one per state (labels, policies)."""

    def __init__(
        self,
        topology: Topology,
        policies: Iterable[NetworkPolicy],
        addresses: Mapping[str, ipaddress.IPv4Address],
        settings: ImplementationSettings | None = None,
        cluster_policies: Iterable[ClusterPolicy] = (),
    ) -> None:
        self.topology = topology
        self.policies = tuple(policies)
        self.cluster_policies = tuple(cluster_policies)
        self.settings = settings or ImplementationSettings()
        self.pods: tuple[PodSpec, ...] = topology.pods
        self.externals: tuple[ExternalHost, ...] = topology.externals
        self.pod_index = {p.id: i for i, p in enumerate(self.pods)}
        self.dest_index = {ep.id: i for i, ep in enumerate(self.destinations)}
        missing = [ep.id for ep in self.destinations if ep.id not in addresses]
        if missing:
            raise HarnessError(f"no address for {', '.join(missing)}")
        self.addresses = {k: ipaddress.ip_address(v) for k, v in addresses.items()}
        ns_names = [ns.name for ns in topology.namespaces]
        ns_of_pod = np.array([ns_names.index(p.namespace) for p in self.pods], dtype=np.int64)
        self._ns_of_pod = ns_of_pod
        self._ns_names = ns_names
        self._pod_labels = _LabelIndex([p.labels for p in self.pods])
        self._ns_labels = _LabelIndex([ns.labels for ns in topology.namespaces])
        self._ip_cache: dict[IPBlock, tuple[Mask, Mask]] = {}
        self._selected: dict[str, Mask] = {p.ref: self._selected_by(p) for p in self.policies}
        self.ingress_isolated = self._isolated(PolicyType.INGRESS)
        self.egress_isolated = self._isolated(PolicyType.EGRESS)
        self._cache: dict[PortProtocol, Mask] = {}
        self._side_cache: dict[PortProtocol, tuple[Mask, Mask]] = {}
        self._policy_by_ref = {p.ref: p for p in self.policies}
        self._admission_cache: dict[tuple[str, PortProtocol], Admission] = {}
        self._named_port_cache: dict[tuple[str, Protocol], npt.NDArray[np.int64]] = {}
        self.tiers = ClusterTiers(self, self.cluster_policies)

    @property
    def destinations(self) -> tuple[PodSpec | ExternalHost, ...]:
        return (*self.pods, *self.externals)

    # -- selection -------------------------------------------------------------------

    def _pods_in_namespaces(self, ns_mask: Mask) -> Mask:
        if not len(self.pods):
            return np.zeros(0, bool)
        return ns_mask[self._ns_of_pod]

    def _namespace_mask(self, name: str) -> Mask:
        mask = np.zeros(len(self._ns_names), bool)
        if name in self._ns_names:
            mask[self._ns_names.index(name)] = True
        return mask

    def _selected_by(self, policy: NetworkPolicy) -> Mask:
        in_ns = self._pods_in_namespaces(self._namespace_mask(policy.namespace))
        return in_ns & self._pod_labels.select(policy.pod_selector)

    def pod_set(self, selection: PodSet) -> Mask:
        """Pods that a cluster policy's subject or namespaces/pods peer selects."""
        pods = self._pods_in_namespaces(self._ns_labels.select(selection.namespace_selector))
        if selection.pod_selector is not None:
            pods = pods & self._pod_labels.select(selection.pod_selector)
        return pods

    def network_peer(self, peer: ClusterPeer) -> tuple[Mask, Mask]:
        """(pods, externals) in a networks peer: unlike ipBlock, the network-policy-api
        checks cluster-internal traffic against networks too, whatever
        ``ipblock_matches_pods`` says."""
        pods = np.array([any(self.addresses[p.id] in n for n in peer.networks) for p in self.pods], dtype=bool)
        ext = np.array([any(self.addresses[e.id] in n for n in peer.networks) for e in self.externals], dtype=bool)
        return pods, ext

    def _isolated(self, direction: PolicyType) -> Mask:
        mask = np.zeros(len(self.pods), bool)
        for policy in self.policies:
            if direction in policy.policy_types:
                mask |= self._selected[policy.ref]
        return mask

    def _ip_block(self, block: IPBlock) -> tuple[Mask, Mask]:
        """(pods, externals) whose address the block contains."""
        cached = self._ip_cache.get(block)
        if cached is None:
            pods = np.array([block.contains(self.addresses[p.id]) for p in self.pods], dtype=bool)
            if not self.settings.ipblock_matches_pods:
                pods = np.zeros(len(self.pods), bool)
            ext = np.array([block.contains(self.addresses[e.id]) for e in self.externals], dtype=bool)
            cached = self._ip_cache[block] = (pods, ext)
        return cached

    def _peer(self, policy: NetworkPolicy, peer: Peer) -> tuple[Mask, Mask]:
        """(pods, externals) a peer matches."""
        if peer.ip_block is not None:
            return self._ip_block(peer.ip_block)
        if peer.namespace_selector is None:
            ns_mask = self._namespace_mask(policy.namespace)
        else:
            ns_mask = self._ns_labels.select(peer.namespace_selector)
        pods = self._pods_in_namespaces(ns_mask)
        if peer.pod_selector is not None:
            pods = pods & self._pod_labels.select(peer.pod_selector)
        return pods, np.zeros(len(self.externals), bool)

    def _peers(self, policy: NetworkPolicy, rule: Rule) -> tuple[Mask, Mask]:
        if not rule.peers:
            return np.ones(len(self.pods), bool), np.ones(len(self.externals), bool)
        pods = np.zeros(len(self.pods), bool)
        ext = np.zeros(len(self.externals), bool)
        for peer in rule.peers:
            p, e = self._peer(policy, peer)
            pods |= p
            ext |= e
        return pods, ext

    # -- ports -----------------------------------------------------------------------

    @staticmethod
    def _port_matches(entry: PolicyPort, key: PortProtocol, endpoint: PodSpec | ExternalHost | None) -> bool:
        if entry.protocol is not key.protocol:
            return False
        if entry.port is None:
            return True
        if isinstance(entry.port, str):
            # Named ports resolve per destination pod; external hosts have none.
            if not isinstance(endpoint, PodSpec):
                return False
            return endpoint.named_port(entry.port, key.protocol) == key.port
        end = entry.end_port if entry.end_port is not None else entry.port
        return entry.port <= key.port <= end

    def _rule_ports(self, rule: Rule, key: PortProtocol, endpoints: Sequence[PodSpec | ExternalHost]) -> Mask:
        """Which destination endpoints this rule's ports admit ``key`` on."""
        if not rule.ports:
            return np.ones(len(endpoints), bool)
        mask = np.zeros(len(endpoints), bool)
        for entry in rule.ports:
            if not isinstance(entry.port, str):
                if self._port_matches(entry, key, None):
                    mask[:] = True
            elif entry.protocol is key.protocol:
                # Named ports resolve per destination pod; external hosts have none.
                mask |= self._named_ports(entry.port, key.protocol)[: len(endpoints)] == key.port
        return mask

    def _named_ports(self, name: str, protocol: Protocol) -> npt.NDArray[np.int64]:
        """The number behind ``name`` per destination (pods, then external hosts); 0
        where there is none."""
        cached = self._named_port_cache.get((name, protocol))
        if cached is None:
            numbers = [p.named_port(name, protocol) or 0 for p in self.pods] + [0] * len(self.externals)
            cached = self._named_port_cache[(name, protocol)] = np.array(numbers, dtype=np.int64)
        return cached

    # -- the matrix ------------------------------------------------------------------

    def admission(self, ref: str, key: PortProtocol) -> Admission:
        """What one policy in force admits on ``key``, rule by rule, as blocks: each
        ingress block is (pods of the policy that accept, source pods), each egress
        block (pods of the policy that may send, destinations: pods, then external
        hosts). Empty for a direction the policy does not list in ``policyTypes``."""
        cached = self._admission_cache.get((ref, key))
        if cached is not None:
            return cached
        policy = self._policy_by_ref[ref]
        selected = self._selected[ref]
        ingress: list[tuple[Mask, Mask]] = []
        egress: list[tuple[Mask, Mask]] = []
        if selected.any() and PolicyType.INGRESS in policy.policy_types:
            for rule in policy.ingress:
                src_pods, _ = self._peers(policy, rule)
                targets = selected & self._rule_ports(rule, key, self.pods)
                if targets.any() and src_pods.any():
                    ingress.append((targets, src_pods))
        if selected.any() and PolicyType.EGRESS in policy.policy_types:
            for rule in policy.egress:
                dst_pods, dst_ext = self._peers(policy, rule)
                dst = np.concatenate([dst_pods, dst_ext]) & self._rule_ports(rule, key, self.destinations)
                if dst.any():
                    egress.append((selected, dst))
        admission = self._admission_cache[(ref, key)] = Admission(tuple(ingress), tuple(egress))
        return admission

    def selected(self, ref: str) -> Mask:
        """Pods the policy ``ref`` selects (in any direction)."""
        return self._selected[ref]

    def sides(self, key: PortProtocol) -> tuple[Mask, Mask]:
        """``(ingress, egress)``: ``ingress[d, s]``, pod ``d`` accepts pod ``s``;
        ``egress[s, d]``, pod ``s`` may send to destination ``d`` (pods, then
        external hosts). Without cluster policies, non-isolated pods accept / send
        everything; with them, each direction goes through the tiers."""
        cached = self._side_cache.get(key)
        if cached is not None:
            return cached
        ingress = np.zeros((len(self.pods), len(self.pods)), bool)
        egress = np.zeros((len(self.pods), len(self.destinations)), bool)
        for policy in self.policies:
            admission = self.admission(policy.ref, key)
            for targets, sources in admission.ingress:
                ingress[targets] |= sources
            for senders, destinations in admission.egress:
                egress[senders] |= destinations
        if self.tiers.empty:
            ingress[~self.ingress_isolated] = True
            egress[~self.egress_isolated] = True
        else:
            ingress = self._with_tiers(PolicyType.INGRESS, key, ingress, self.ingress_isolated)
            egress = self._with_tiers(PolicyType.EGRESS, key, egress, self.egress_isolated)
        self._side_cache[key] = (ingress, egress)
        return ingress, egress

    def _with_tiers(self, direction: PolicyType, key: PortProtocol, networkpolicy: Mask, isolated: Mask) -> Mask:
        """One direction's side through the three tiers: Admin Accept/Deny first;
        then NetworkPolicies for isolated pods, the Baseline tier (only its Deny
        blocks) for the others."""
        admin_accept, admin_deny = self.tiers.decide(Tier.ADMIN, direction, key)
        _, baseline_deny = self.tiers.decide(Tier.BASELINE, direction, key)
        below_admin = np.where(isolated[:, None], networkpolicy, ~baseline_deny)
        result: Mask = admin_accept | (~admin_deny & below_admin)
        return result

    def allowed_matrix(self, key: PortProtocol) -> Mask:
        """``m[s, d]``: pod ``s`` may reach destination ``d`` (pods, then externals):
        the source's egress side and the destination's ingress side both allow it."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        ingress, egress = self.sides(key)
        n_pods = len(self.pods)
        allowed = egress.copy()
        allowed[:, :n_pods] &= ingress.T
        if self.settings.self_traffic is SelfTraffic.ALLOWED and n_pods:
            idx = np.arange(n_pods)
            allowed[idx, idx] = True
        self._cache[key] = allowed
        return allowed

    def allowed(self, source: str, destination: str, port: PortProtocol | str) -> bool:
        key = port if isinstance(port, PortProtocol) else PortProtocol.parse(port)
        if destination not in self.dest_index:
            # A Service, by cluster IP or by name (harness.model.services).
            return destination_observation(self, source, destination, key).outcome is Outcome.ALLOWED
        return bool(self.allowed_matrix(key)[self.pod_index[source], self.dest_index[destination]])

    def explain(self, source: str, destination: str, port: PortProtocol) -> str:
        """Why a cell is allowed or blocked, side by side: for the source's egress
        and the destination's ingress, whether the pod is isolated, by which
        policies, and which rule (with the peer and port entry that matched) admits
        the traffic, or that none does. In the words of the emulated backend's
        packet-level explanation, so that both read alike."""
        key = port
        if destination not in self.dest_index:
            return explain_destination(self, source, destination, key)
        s, d = self.pod_index[source], self.dest_index[destination]
        if source == destination and self.settings.self_traffic is SelfTraffic.ALLOWED:
            return f"{source} reaches itself: a pod's traffic to its own address is always allowed (self_traffic: allowed)"
        parts = [self._side_reason(PolicyType.EGRESS, s, d, key)]
        if d < len(self.pods):
            parts.append(self._side_reason(PolicyType.INGRESS, d, s, key))
        return "; ".join(parts)

    def _side_reason(self, direction: PolicyType, subject: int, peer: int, key: PortProtocol) -> str:
        """One side of a cell: ``subject`` is the pod whose policies apply (the
        source for egress, the destination for ingress), ``peer`` the index of the
        other end (a destination for egress, a pod for ingress)."""
        pod = self.pods[subject]
        word = "egress" if direction is PolicyType.EGRESS else "ingress"
        passed = ""
        if not self.tiers.empty:
            admin = self.tiers.decision(Tier.ADMIN, direction, subject, peer, key)
            if admin is not None and admin.action is Action.DENY:
                return f"{word} of {pod.id} denied by {admin.describe()}"
            if admin is not None and admin.action is Action.ACCEPT:
                return f"{word} of {pod.id} admitted by {admin.describe()}"
            passed = f" (passed on by {admin.describe()})" if admin is not None else ""
        isolating = [p for p in self.policies if direction in p.policy_types and self._selected[p.ref][subject]]
        if not isolating:
            baseline = self.tiers.decision(Tier.BASELINE, direction, subject, peer, key) if not self.tiers.empty else None
            if baseline is not None and baseline.action is Action.DENY:
                return f"{word} of {pod.id} denied by {baseline.describe()}{passed}"
            if baseline is not None and baseline.action is Action.ACCEPT:
                return f"{word} of {pod.id} admitted by {baseline.describe()}{passed}"
            return f"{word} of {pod.id} not isolated{passed}"
        other = self.destinations[peer] if direction is PolicyType.EGRESS else self.pods[peer]
        for policy in isolating:
            rules = policy.egress if direction is PolicyType.EGRESS else policy.ingress
            for number, rule in enumerate(rules):
                match = self._rule_match(policy, rule, direction, pod, other, peer, key)
                if match is not None:
                    return f"{word} of {pod.id} admitted by {policy.ref} {word}[{number}]{match}{passed}"
        # The words of the emulated backend's packet-level explanation (docs/emulated-backend.md).
        return f"{word} of {pod.id} isolated by {', '.join(p.ref for p in isolating)}{passed}, no rule allows it"

    def _rule_match(
        self,
        policy: NetworkPolicy,
        rule: Rule,
        direction: PolicyType,
        subject: PodSpec,
        other: PodSpec | ExternalHost,
        peer_index: int,
        key: PortProtocol,
    ) -> str | None:
        """`` (from[1] ..., ports[0] ...)`` when ``rule`` admits the cell, else None."""
        field = "to" if direction is PolicyType.EGRESS else "from"
        peer_text = f"every {'destination' if direction is PolicyType.EGRESS else 'source'}"
        if rule.peers:
            found = None
            for j, peer in enumerate(rule.peers):
                pods, ext = self._peer(policy, peer)
                hit = pods[peer_index] if peer_index < len(self.pods) else ext[peer_index - len(self.pods)]
                if isinstance(other, PodSpec) and direction is PolicyType.INGRESS:
                    hit = pods[peer_index]
                if hit:
                    found = f"{field}[{j}] {_describe_peer(peer)}"
                    break
            if found is None:
                return None
            peer_text = found
        # The port is resolved on the destination: the peer for egress, the subject for ingress.
        destination = other if direction is PolicyType.EGRESS else subject
        if not rule.ports:
            port_text = "every port"
        else:
            hits = [i for i, entry in enumerate(rule.ports) if self._port_matches(entry, key, destination)]
            if not hits:
                return None
            port_text = f"ports[{hits[0]}] {_describe_port(rule.ports[hits[0]])}"
        return f" ({peer_text}, {port_text})"

    def reachability(self, cells: CellSet) -> ReachabilityMatrix:
        """The model's outcome (allowed or blocked) for every cell of ``cells``,
        computed on whole arrays."""
        axes = cells.axes
        rows = np.array([self.pod_index[s] for s in axes.sources], dtype=np.int64)
        # Services (by cluster IP or name) are not endpoints: their columns are
        # judged on their backends, cell by cell (harness.model.services).
        services = [j for j, d in enumerate(axes.destinations) if d not in self.dest_index]
        cols = np.array([self.dest_index.get(d, 0) for d in axes.destinations], dtype=np.int64)
        codes = {}
        notes: dict[Cell, Observation] = {}
        for port in axes.ports:
            allowed = self.allowed_matrix(port)[np.ix_(rows, cols)] if len(rows) and len(cols) else np.zeros(axes.shape, bool)
            grid = np.where(allowed, np.int8(ALLOWED_CODE), np.int8(BLOCKED_CODE)).astype(np.int8)
            for j in services:
                for i in np.flatnonzero(cells.masks[port][:, j]).tolist():
                    cell = Cell(axes.sources[i], axes.destinations[j], port)
                    obs = destination_observation(self, cell.source, cell.destination, port)
                    grid[i, j] = obs.outcome.code
                    if not obs.plain:
                        notes[cell] = obs
            grid[~cells.masks[port]] = NOT_PROBED
            codes[port] = grid
        return ReachabilityMatrix.from_codes(axes, codes, notes)


def _describe_peer(peer: Peer) -> str:
    if peer.ip_block is not None:
        text = f"ipBlock {peer.ip_block.cidr}"
        if peer.ip_block.excepts:
            text += " except " + ", ".join(str(e) for e in peer.ip_block.excepts)
        return text
    parts = []
    if peer.namespace_selector is not None:
        parts.append(f"namespaceSelector {peer.namespace_selector}")
    if peer.pod_selector is not None:
        parts.append(f"podSelector {peer.pod_selector}")
    return " and ".join(parts)


def _describe_port(entry: PolicyPort) -> str:
    if entry.port is None:
        return f"every {entry.protocol} port"
    if entry.end_port is not None:
        return f"{entry.port}-{entry.end_port}/{entry.protocol}"
    return f"{entry.port}/{entry.protocol}"
