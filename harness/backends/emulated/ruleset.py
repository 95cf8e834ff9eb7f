"""NetworkPolicy objects compiled into one nftables table for the node namespace.

An independent implementation of Kubernetes NetworkPolicy semantics, shaped like
Calico's dataplane:

* ``forward`` accepts return traffic: packets in the reply direction of a
  connection the policies admitted, and ICMP errors about one. Every packet in the
  original direction, first or not, then goes through the policies in force: a
  packet coming from a pod isolated for egress through that pod's ``egress-…``
  chain, one going to a pod isolated for ingress through its ``ingress-…`` chain,
  so traffic must pass both the source's egress and the destination's ingress.
  (Accepting every ``established`` packet first would let a flow admitted before
  a policy change, such as UDP from a reused source port, pass after it.)
* A pod is isolated for a direction when some policy selecting it has that policy
  type. Its chain has one rule per (policy rule, protocol) that admits the packet
  when it matches, and ends with ``drop``: the union of every rule of every
  selecting policy, and DROP (not reject) for the rest, as Calico does.
* The kernel says why (:mod:`harness.backends.emulated.nflog`): each chain's
  ``drop`` also logs the packet to NFLOG group :data:`LOG_GROUP` with a prefix
  naming the chain, and an admitting rule ``goto``\\ s a small chain of its policy
  rule that logs the first packet of each flow (every UDP datagram) with a prefix
  naming that rule, then returns. :class:`LogIndex` maps the prefixes back to the
  chain (direction, pod, isolating policies) or the rule (``x/allow-db
  ingress[0]``); they carry the ruleset's generation, so that a packet logged under
  an earlier ruleset is never read as one of this ruleset's.
* Peers: ``podSelector`` alone selects pods of the policy's namespace,
  ``namespaceSelector`` alone every pod of matching namespaces, both together their
  intersection, ``ipBlock`` the CIDR minus its ``except`` ranges (and pods too,
  unless ``ipblock_matches_pods`` is off). No peers means every source or
  destination, external hosts included.
* A pod's traffic to its own address never reaches the node (as with Calico it is
  always allowed); with ``self_traffic: policy`` a table in the pod's own
  namespace applies the pod's chains to it (:func:`render_self_rulesets`).
* Ports: none means every port and protocol; ``endPort`` makes a range; a named
  port is resolved on the pod it applies to: the selected pod for ingress, each
  destination pod for egress (so those compile to address-and-port pairs).

The whole table is rendered from scratch on every change and loaded in one
transaction (create, delete, define), so a half-applied state is never visible.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from harness.backends.emulated.names import SINK
from harness.backends.emulated.tiers import NEXT_SUFFIX, TierCompiler, TierRule
from harness.core.cluster_policy import Action, ClusterPolicy, Tier
from harness.core.policy import IPBlock, NetworkPolicy, Peer, PolicyType, Rule
from harness.core.selectors import LabelSelector
from harness.core.topology import PodSpec, Protocol, Topology

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network

#: The NFLOG group of every log statement. Groups are per network namespace, and
#: each run's namespaces are its own, so one number serves every run.
LOG_GROUP = 1

#: Return traffic, accepted before any policy: replies of admitted connections and
#: the ICMP errors about them. Original-direction packets are never accepted here.
_RETURN_TRAFFIC = ("ct state established ct direction reply accept", "ct state related accept")

_SAFE_CHAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9./_-]{0,150}$")
_L4 = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}


@dataclass(frozen=True)
class ServiceRules:
    """What Services add to the table (:mod:`harness.backends.emulated.services`):
    the DNAT rules of a ``prerouting`` nat chain, and the rules ``forward`` runs
    before any policy."""

    prerouting: tuple[str, ...] = ()
    forward: tuple[str, ...] = ()


@dataclass(frozen=True)
class RulesetInput:
    """Everything a ruleset depends on."""

    table: str
    topology: Topology  # with the labels in force
    addresses: Mapping[str, IPv4]  # endpoint id → address
    interfaces: Mapping[str, str]  # endpoint id → node-side veth
    policies: Sequence[NetworkPolicy]
    ipblock_matches_pods: bool = True
    #: The cluster-scoped policies in force: the Admin and Baseline tiers (tiers.py).
    cluster_policies: Sequence[ClusterPolicy] = ()
    #: Counts the rulesets of a deployment: part of every log prefix.
    generation: int = 0
    services: ServiceRules = ServiceRules()
    #: The node namespace holds no table of this name yet (a new network's first
    #: load), so the script only creates it: removing a table, even an empty one,
    #: makes the kernel wait for an RCU grace period (about 15 ms) in the commit.
    first_load: bool = False


@dataclass(frozen=True)
class ChainMeaning:
    """What a logged drop means: ``pod`` is isolated in ``direction`` by
    ``policies`` and no rule of theirs allows the packet; or, with ``rule``, a
    cluster policy's Deny rule (``ClusterNetworkPolicy/x egress[0] (Deny, Admin
    tier, priority 10)``) dropped it in ``direction`` (for whichever pod's side
    that is: ``pod`` is empty)."""

    direction: PolicyType
    pod: str
    policies: tuple[str, ...]
    rule: str = ""


@dataclass(frozen=True)
class RuleMeaning:
    """What an admission logged by a policy rule means: ``rule`` (``x/allow-db
    ingress[0]``) admitted the flow in ``direction``."""

    direction: PolicyType
    rule: str


@dataclass(frozen=True)
class LogIndex:
    """The meaning of each log prefix of one ruleset, and which pods it isolates
    (the ones without a chain in a direction let everything pass)."""

    generation: int = 0
    #: The prefix of packets to an address no emulated host owns.
    unreachable: str = ""
    drops: Mapping[str, ChainMeaning] = field(default_factory=dict, hash=False)
    admits: Mapping[str, RuleMeaning] = field(default_factory=dict, hash=False)
    #: Admin-tier Pass rules that handed a packet on to the next tier.
    passes: Mapping[str, RuleMeaning] = field(default_factory=dict, hash=False)
    #: (pod id, direction) → the policies isolating that pod in that direction
    isolation: Mapping[tuple[str, PolicyType], tuple[str, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("drops", "admits", "passes", "isolation"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def isolating(self, pod_id: str, direction: PolicyType) -> tuple[str, ...]:
        return self.isolation.get((pod_id, direction), ())


@dataclass(frozen=True)
class CompiledRuleset:
    """The node namespace's script, the pod namespaces' self-traffic scripts (pod
    id → script, when asked for) and the meaning of their log prefixes."""

    text: str
    index: LogIndex
    self_tables: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "self_tables", MappingProxyType(dict(self.self_tables)))


def selects(policy: NetworkPolicy, pod: PodSpec) -> bool:
    return policy.namespace == pod.namespace and policy.pod_selector.matches(pod.labels)


def peer_pods(peer: Peer, policy_namespace: str, topology: Topology) -> list[PodSpec]:
    """Pods a selector peer stands for."""
    if peer.namespace_selector is None:
        namespaces = {policy_namespace}
    else:
        selector = peer.namespace_selector
        namespaces = {ns.name for ns in topology.namespaces if selector.matches(ns.labels)}
    pod_selector = peer.pod_selector or LabelSelector()
    return [p for p in topology.pods if p.namespace in namespaces and pod_selector.matches(p.labels)]


def block_networks(block: IPBlock, excluded: Iterable[IPv4] = ()) -> list[Net4]:
    """The IPv4 networks of ``cidr`` minus ``except`` and minus ``excluded`` hosts.
    An IPv6 block matches nothing here: the emulated network is IPv4 only."""
    if not isinstance(block.cidr, Net4):
        return []
    remaining = [block.cidr]
    holes = [ex for ex in block.excepts if isinstance(ex, Net4)]
    holes += [Net4(f"{ip}/32") for ip in excluded]
    for hole in holes:
        next_remaining: list[Net4] = []
        for net in remaining:
            if not net.overlaps(hole):
                next_remaining.append(net)
            elif hole.subnet_of(net) and hole != net:
                next_remaining.extend(net.address_exclude(hole))
            # else: the hole covers the whole network
        remaining = next_remaining
    return list(ipaddress.collapse_addresses(remaining))


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _net_text(net: Net4) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _chain(name: str, lines: Iterable[str]) -> str:
    return f"\tchain {name} {{\n" + "".join(f"\t\t{line}\n" for line in lines) + "\t}\n"


def _table(name: str, chains: Sequence[str] | None, exists: bool = True) -> str:
    """Replace table ``name`` with ``chains`` (remove it when None). Creating then
    deleting the table makes the load work whether or not it exists; the
    statements of one file are one atomic transaction. Unless it may ``exist``,
    the table is only created."""
    text = f"table inet {name}\ndelete table inet {name}\n" if exists or chains is None else ""
    if chains is not None:
        text += f"table inet {name} {{\n" + "".join(chains) + "}\n"
    return text


def _comment(text: str) -> str:
    return ' comment "' + text.replace('"', "'")[:120] + '"'


def _log(prefix: str) -> str:
    return f'log prefix "{prefix}" group {LOG_GROUP}'


@dataclass
class _PodChain:
    direction: PolicyType
    name: str
    body: list[str]
    admits: list[str]  # names of the admit chains its rules go to
    #: Chains only its rules reach (by ``goto``): the tier after the Admin tier.
    helpers: list[tuple[str, list[str]]] = field(default_factory=list)


class _Compiler:
    def __init__(self, data: RulesetInput) -> None:
        self.data = data
        self.topology = data.topology
        self.pods = [p for p in data.topology.pods if p.id in data.addresses and p.id in data.interfaces]
        self.pod_ips = [data.addresses[p.id] for p in self.pods]
        self.policies = sorted(data.policies, key=lambda p: p.ref)
        self.drops: dict[str, ChainMeaning] = {}
        self.admits: dict[str, RuleMeaning] = {}
        self.passes: dict[str, RuleMeaning] = {}
        self.tiers = TierCompiler(data.topology, self.pods, data.addresses, data.cluster_policies)
        #: (rule description, direction) → the log prefix of a tier rule's drop or pass
        self._tier_prefixes: dict[tuple[str, PolicyType], str] = {}
        self.isolation: dict[tuple[str, PolicyType], tuple[str, ...]] = {}
        #: admit chain name → its definition, one per policy rule that admits anything
        self.admit_chains: dict[str, str] = {}
        self._admit_names: dict[tuple[str, PolicyType, int], str] = {}
        self._pod_chains: dict[str, list[_PodChain]] = {}

    def prefix(self, kind: str, number: int) -> str:
        return f"nph {self.data.generation} {kind}{number}"

    def chain_name(self, direction: PolicyType, pod: PodSpec, index: int) -> str:
        kind = "ingress" if direction is PolicyType.INGRESS else "egress"
        name = f"{kind}-{pod.id}"
        return name if _SAFE_CHAIN.match(name) else f"{kind}-pod{index}"

    def admit_chain(self, policy: NetworkPolicy | ClusterPolicy, direction: PolicyType, number: int) -> str:
        """The chain a rule of ``policy`` goes to when it admits a packet: it logs
        the first packet of each flow (and every UDP datagram, whose flows nc
        opens one datagram at a time) under this rule's prefix, then returns."""
        key = (policy.ref, direction, number)
        name = self._admit_names.get(key)
        if name is None:
            number_of_chain = len(self._admit_names)
            name = f"admit-{number_of_chain}"
            prefix = self.prefix("a", number_of_chain)
            if isinstance(policy, ClusterPolicy):
                meaning = policy.describe_rule(direction, number)
            else:
                meaning = f"{policy.ref} {direction.value.lower()}[{number}]"
            self.admits[prefix] = RuleMeaning(direction, meaning)
            self.admit_chains[name] = _chain(
                name,
                [f"meta l4proto udp {_log(prefix)}", f"meta l4proto != udp ct state new {_log(prefix)}"],
            )
            self._admit_names[key] = name
        return name

    def pod_chains(self, pod: PodSpec, index: int) -> list[_PodChain]:
        """The chains of each direction in which policies apply to ``pod``: the
        NetworkPolicies isolating it, inside the cluster policy tiers selecting it."""
        cached = self._pod_chains.get(pod.id)
        if cached is not None:
            return cached
        chains = []
        for direction in (PolicyType.EGRESS, PolicyType.INGRESS):
            chain = self._tiered(pod, index, direction, self._networkpolicy_chain(pod, direction))
            if chain is not None:
                chains.append(chain)
        self._pod_chains[pod.id] = chains
        return chains

    def _networkpolicy_chain(self, pod: PodSpec, direction: PolicyType) -> tuple[list[str], list[str]] | None:
        """(rules, admit chains) of the NetworkPolicies isolating ``pod`` in
        ``direction``, ending in a logged drop; None when none isolates it."""
        selecting = [p for p in self.policies if direction in p.policy_types and selects(p, pod)]
        if not selecting:
            return None  # not isolated in this direction: everything passes
        self.isolation[(pod.id, direction)] = tuple(p.ref for p in selecting)
        body: list[str] = []
        admits: list[str] = []
        for policy in selecting:
            rules = policy.ingress if direction is PolicyType.INGRESS else policy.egress
            for number, rule in enumerate(rules):
                where = f"{policy.ref} {direction.value.lower()}[{number}]"
                matches = self.compile_rule(rule, direction, pod, policy)
                if not matches:
                    continue
                target = self.admit_chain(policy, direction, number)
                admits.append(target)
                body += [f"{match}goto {target}" + _comment(where) for match in matches]
        prefix = self.prefix("d", len(self.drops))
        self.drops[prefix] = ChainMeaning(direction, pod.id, tuple(p.ref for p in selecting))
        body.append(f"{_log(prefix)} drop" + _comment(f"{pod.id}: not allowed by any {direction.value} policy"))
        return body, admits

    def _tiered(
        self, pod: PodSpec, index: int, direction: PolicyType, networkpolicy: tuple[list[str], list[str]] | None
    ) -> _PodChain | None:
        """The entry chain of one direction: Admin tier rules first, then (in a
        helper chain, the target of Pass) the NetworkPolicy rules or, for a pod they
        do not isolate, the Baseline tier's. None when no policy applies."""
        name = self.chain_name(direction, pod, index)
        if self.tiers.empty:
            return None if networkpolicy is None else _PodChain(direction, name, *networkpolicy)
        admits: list[str] = []
        if networkpolicy is not None:
            below, np_admits = networkpolicy
            admits += np_admits
        else:
            # Baseline Pass and no match leave the packet allowed: return.
            below = self._tier_lines(self.tiers.rules(Tier.BASELINE, direction, pod), "return", admits)
        helper = f"{name}{NEXT_SUFFIX}"
        onward = f"goto {helper}" if below else "return"
        body = self._tier_lines(self.tiers.rules(Tier.ADMIN, direction, pod), onward, admits)
        if not body:
            return _PodChain(direction, name, below, admits) if below else None
        if not below:
            return _PodChain(direction, name, body, admits)
        body.append(onward + _comment(f"{pod.id}: no Admin tier rule decided"))
        return _PodChain(direction, name, body, admits, [(helper, below)])

    def _tier_prefix(self, rule: TierRule, kind: str) -> str:
        key = (rule.describe(), rule.direction)
        prefix = self._tier_prefixes.get(key)
        if prefix is None:
            prefix = self._tier_prefixes[key] = self.prefix(kind, len(self._tier_prefixes))
            if kind == "t":
                self.drops[prefix] = ChainMeaning(rule.direction, "", (), rule.describe())
            else:
                self.passes[prefix] = RuleMeaning(rule.direction, rule.describe())
        return prefix

    def _tier_lines(self, rules: Sequence[TierRule], onward: str, admits: list[str]) -> list[str]:
        """nft rules for ``rules`` of one tier: Accept goes to the rule's logging
        admit chain, Deny drops with a log, Pass continues with ``onward`` (logged
        like an admission when it leads to the next tier's chain)."""
        lines: list[str] = []
        for rule in rules:
            comment = _comment(f"{rule.policy.ref} {rule.direction.value.lower()}[{rule.index}] {rule.action.value}")
            if not rule.matches:
                continue
            if rule.action is Action.ACCEPT:
                target = self.admit_chain(rule.policy, rule.direction, rule.index)
                admits.append(target)
                lines += [f"{match}goto {target}{comment}" for match in rule.matches]
            elif rule.action is Action.DENY:
                log = _log(self._tier_prefix(rule, "t"))
                lines += [f"{match}{log} drop{comment}" for match in rule.matches]
            elif onward == "return":
                lines += [f"{match}return{comment}" for match in rule.matches]
            else:
                log = _log(self._tier_prefix(rule, "p"))
                for match in rule.matches:
                    lines += [
                        f"{match}meta l4proto udp {log} {onward}{comment}",
                        f"{match}ct state new {log} {onward}{comment}",
                        f"{match}{onward}{comment}",
                    ]
        return lines

    def render(self) -> str:
        chains: list[str] = []
        jumps: dict[PolicyType, list[str]] = {PolicyType.EGRESS: [], PolicyType.INGRESS: []}
        for index, pod in enumerate(self.pods):
            veth = self.data.interfaces[pod.id]
            for chain in self.pod_chains(pod, index):
                jumps[chain.direction].append(f'"{veth}" : jump {chain.name}')
                chains.append(_chain(chain.name, chain.body))
                chains += [_chain(name, body) for name, body in chain.helpers]
        forward = ["type filter hook forward priority filter; policy accept;", *_RETURN_TRAFFIC, *self.data.services.forward]
        # Packets from a pod arrive on its veth (iifname); packets to a pod leave
        # through it (oifname).
        if jumps[PolicyType.EGRESS]:
            forward.append(f"iifname vmap {_set(jumps[PolicyType.EGRESS])}")
        if jumps[PolicyType.INGRESS]:
            forward.append(f"oifname vmap {_set(jumps[PolicyType.INGRESS])}")
        # What the policies let through to an address nobody owns: "network
        # unreachable", as a router without a route says.
        forward.append(f'oifname "{SINK}" {_log(self.prefix("u", 0))} reject with icmp type net-unreachable')
        nat = []
        if self.data.services.prerouting:
            # Before any policy, as kube-proxy's DNAT (priority dstnat, then filter).
            head = "type nat hook prerouting priority dstnat; policy accept;"
            nat.append(_chain("prerouting", [head, *self.data.services.prerouting]))
        return _table(
            self.data.table,
            [*nat, _chain("forward", forward), *chains, *self.admit_chains.values()],
            exists=not self.data.first_load,
        )

    def render_self(self, pod_id: str) -> str:
        """The table for a pod's own namespace that subjects its traffic to itself
        to its policies (``self_traffic: policy``); that traffic never reaches the
        node. Empty (the table removed) when the pod is not isolated."""
        index, pod = next((i, p) for i, p in enumerate(self.pods) if p.id == pod_id)
        own = self.data.addresses[pod.id]
        chains = self.pod_chains(pod, index)
        if not chains:
            return _table(self.data.table, None)
        output = ["type filter hook output priority filter; policy accept;", *_RETURN_TRAFFIC]
        output += [f"ip saddr {own} ip daddr {own} jump {chain.name}" for chain in chains]
        admits = sorted({name for chain in chains for name in chain.admits}, key=lambda n: int(n.split("-")[1]))
        return _table(
            self.data.table,
            [
                _chain("output", output),
                *(_chain(chain.name, chain.body) for chain in chains),
                *(_chain(name, body) for chain in chains for name, body in chain.helpers),
                *(self.admit_chains[name] for name in admits),
            ],
        )

    def index(self) -> LogIndex:
        return LogIndex(self.data.generation, self.prefix("u", 0), self.drops, self.admits, self.passes, self.isolation)

    def peer_networks(self, rule: Rule, policy: NetworkPolicy) -> list[Net4]:
        networks: list[Net4] = []
        for peer in rule.peers:
            if peer.ip_block is not None:
                excluded = () if self.data.ipblock_matches_pods else self.pod_ips
                networks += block_networks(peer.ip_block, excluded)
            else:
                networks += [
                    Net4(f"{self.data.addresses[p.id]}/32")
                    for p in peer_pods(peer, policy.namespace, self.topology)
                    if p.id in self.data.addresses
                ]
        return list(ipaddress.collapse_addresses(networks))

    def compile_rule(self, rule: Rule, direction: PolicyType, subject: PodSpec, policy: NetworkPolicy) -> list[str]:
        """The matches (each ending in a space, or empty for "everything") of the
        packets ``rule`` allows; each becomes one rule that admits them."""
        field = "ip saddr" if direction is PolicyType.INGRESS else "ip daddr"
        if rule.peers:
            networks = self.peer_networks(rule, policy)
            if not networks:
                return []  # its peers select nobody (yet): it allows nothing
            match = f"{field} {_set(_net_text(n) for n in networks)} "
            # Pods whose named ports an egress rule can reach.
            peers = [p for p in self.pods if any(self.data.addresses[p.id] in n for n in networks)]
        else:
            match = ""
            peers = self.pods
        if not rule.ports:
            return [match]
        whole: set[Protocol] = set()
        ranges: dict[Protocol, list[tuple[int, int]]] = {}
        named: dict[Protocol, set[tuple[IPv4, int]]] = {}
        for port in rule.ports:
            if port.port is None:
                whole.add(port.protocol)
            elif isinstance(port.port, int):
                ranges.setdefault(port.protocol, []).append((port.port, port.end_port or port.port))
            elif direction is PolicyType.INGRESS:
                number = subject.named_port(port.port, port.protocol)
                if number is not None:
                    ranges.setdefault(port.protocol, []).append((number, number))
            else:
                for peer in peers:
                    number = peer.named_port(port.port, port.protocol)
                    if number is not None:
                        named.setdefault(port.protocol, set()).add((self.data.addresses[peer.id], number))
        lines = []
        for protocol in Protocol:
            l4 = _L4[protocol]
            if protocol in whole:
                lines.append(f"{match}meta l4proto {l4} ")
                continue
            if protocol in ranges:
                ports = (str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merge_ranges(ranges[protocol]))
                lines.append(f"{match}meta l4proto {l4} th dport {_set(ports)} ")
            if protocol in named:
                pairs = (f"{ip} . {number}" for ip, number in sorted(named[protocol]))
                lines.append(f"meta l4proto {l4} ip daddr . th dport {_set(pairs)} ")
        return lines


def compile_ruleset(data: RulesetInput, self_tables: bool = False) -> CompiledRuleset:
    """The node namespace's nft script for ``data``, with ``self_tables`` the
    script of each pod's own namespace for ``self_traffic: policy``, and the
    meaning of their log prefixes."""
    compiler = _Compiler(data)
    text = compiler.render()
    tables = {pod.id: compiler.render_self(pod.id) for pod in compiler.pods} if self_tables else {}
    return CompiledRuleset(text, compiler.index(), tables)


def render_ruleset(data: RulesetInput) -> str:
    """The complete nft script of the node namespace for ``data``."""
    return _Compiler(data).render()


def remove_table(table: str) -> str:
    """An nft script that removes ``table`` if it exists."""
    return _table(table, None)


def render_self_rulesets(data: RulesetInput) -> dict[str, str]:
    """Pod id → the nft script for that pod's own namespace, for ``self_traffic:
    policy``: a pod's traffic to its own address stays inside its namespace, so
    that is where its policies must be applied to it. Its log prefixes are those
    of :func:`compile_ruleset` for the same input."""
    return dict(compile_ruleset(data, self_tables=True).self_tables)
