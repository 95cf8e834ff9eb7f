"""Reference model at cluster scale: 1,000 pods in 20 namespaces, 200 policies with
mixed selectors, named ports, ipBlocks and both directions; the full pod x pod
matrix for three port/protocol pairs. ``--cluster-policies N`` adds N
ClusterNetworkPolicies of both tiers (namespaces, pods and networks peers, ports,
named ports, Accept/Deny/Pass) around them.

    python benchmarks/bench_model.py [--repeat 5] [--cluster-policies 40]

Prints the best and median wall time of building the model and computing the
matrices (the target is at most 2 s on a 2-core machine).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from typing import Any

from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import ClusterPolicy, parse_cluster_policy
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.model import ReferenceModel

APPS = ["web", "api", "db", "cache", "worker", "queue", "auth", "metrics"]
TIERS = ["frontend", "backend", "data"]
PORTS = (PortProtocol(80, Protocol.TCP), PortProtocol(8080, Protocol.TCP), PortProtocol(53, Protocol.UDP))


def build_topology(rng: random.Random) -> Topology:
    namespaces = tuple(
        NamespaceSpec(f"ns{i:02d}", {"team": f"team{i % 5}", "env": "prod" if i % 2 else "dev"}) for i in range(20)
    )
    pods = []
    for ns in namespaces:
        for j in range(50):
            labels = {"app": rng.choice(APPS), "tier": rng.choice(TIERS)}
            if rng.random() < 0.3:
                labels["canary"] = "true"
            pods.append(
                PodSpec(
                    ns.name,
                    f"pod{j:02d}",
                    labels,
                    (
                        PortSpec(80, Protocol.TCP, "http"),
                        PortSpec(8080 if j % 2 else 8081, Protocol.TCP, "metrics"),
                        PortSpec(53, Protocol.UDP, "dns"),
                    ),
                )
            )
    return Topology(namespaces, tuple(pods))


def _peer(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(5)
    if kind == 0:
        return {"podSelector": {"matchLabels": {"app": rng.choice(APPS)}}}
    if kind == 1:
        return {"namespaceSelector": {"matchLabels": {"team": f"team{rng.randrange(5)}"}}}
    if kind == 2:
        return {
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["data"]}]},
        }
    if kind == 3:
        return {"ipBlock": {"cidr": "192.168.0.0/16", "except": [f"192.168.{rng.randrange(1, 21)}.0/24"]}}
    return {"podSelector": {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}}


def _ports(rng: random.Random) -> list[dict[str, Any]]:
    choice = rng.randrange(4)
    if choice == 0:
        return [{"port": "http"}, {"port": "metrics"}]
    if choice == 1:
        return [{"port": 8000, "endPort": 8100}]
    if choice == 2:
        return [{"protocol": "UDP", "port": 53}]
    return []


def policy_manifest(rng: random.Random, i: int, namespace: str, prefix: str = "policy") -> dict[str, Any]:
    """One NetworkPolicy of the mix: selectors of every form, named ports, port
    ranges, ipBlocks, egress on every third."""
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": rng.choice(APPS)}} if i % 7 else {},
        "ingress": [{"from": [_peer(rng) for _ in range(rng.randrange(1, 3))], "ports": _ports(rng)}],
    }
    if i % 3 == 0:
        spec["egress"] = [{"to": [_peer(rng)], "ports": _ports(rng)}]
        spec["policyTypes"] = ["Ingress", "Egress"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{prefix}-{i:03d}", "namespace": namespace},
        "spec": spec,
    }


def build_manifests(rng: random.Random, count: int = 200, prefix: str = "policy") -> list[dict[str, Any]]:
    """``count`` NetworkPolicy manifests spread over the 20 namespaces."""
    return [policy_manifest(rng, i, f"ns{i % 20:02d}", prefix) for i in range(count)]


def build_policies(rng: random.Random) -> list[NetworkPolicy]:
    return [parse_policy(m) for m in build_manifests(rng)]


def _cluster_rule(rng: random.Random, peer_key: str, action: str) -> dict[str, Any]:
    kind = rng.randrange(4)
    if kind == 0:
        peer: dict[str, Any] = {"namespaces": {"matchLabels": {"team": f"team{rng.randrange(5)}"}}}
    elif kind == 1:
        peer = {
            "pods": {
                "namespaceSelector": {"matchLabels": {"env": "prod"}},
                "podSelector": {"matchLabels": {"app": rng.choice(APPS)}},
            }
        }
    elif kind == 2 and peer_key == "to":
        peer = {"networks": [f"192.168.{rng.randrange(1, 21)}.0/24", "203.0.113.0/24"]}
    else:
        peer = {"namespaces": {}}
    rule: dict[str, Any] = {"action": action, peer_key: [peer]}
    choice = rng.randrange(3)
    if choice == 0:
        rule["protocols"] = [{"tcp": {"destinationPort": {"range": {"start": 8000, "end": 8100}}}}]
    elif choice == 1 and "networks" not in peer:
        rule["protocols"] = [{"destinationNamedPort": "metrics"}, {"udp": {"destinationPort": {"number": 53}}}]
    return rule


def build_cluster_policies(rng: random.Random, count: int) -> list[ClusterPolicy]:
    policies = []
    for i in range(count):
        actions = ["Accept", "Deny", "Pass"]
        spec: dict[str, Any] = {
            "tier": "Admin" if i % 2 else "Baseline",
            "priority": rng.randrange(100),
            "subject": {"namespaces": {"matchLabels": {"env": rng.choice(["prod", "dev"])}}} if i % 3 else {"namespaces": {}},
            "ingress": [_cluster_rule(rng, "from", rng.choice(actions)) for _ in range(3)],
            "egress": [_cluster_rule(rng, "to", rng.choice(actions)) for _ in range(2)],
        }
        manifest = {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": f"cnp-{i:03d}"},
            "spec": spec,
        }
        policies.append(parse_cluster_policy(manifest))
    return policies


def run_once(topology: Topology, policies: list[NetworkPolicy], cluster: list[ClusterPolicy]) -> tuple[float, int]:
    started = time.perf_counter()
    model = ReferenceModel(topology, policies, plan_addresses(topology), None, cluster)
    allowed = sum(int(model.allowed_matrix(port).sum()) for port in PORTS)
    return time.perf_counter() - started, allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cluster-policies", type=int, default=0, help="ClusterNetworkPolicies to add (default none)")
    args = parser.parse_args()
    rng = random.Random(20261121)
    topology = build_topology(rng)
    policies = build_policies(rng)
    cluster = build_cluster_policies(random.Random(20261122), args.cluster_policies)
    times = []
    allowed = 0
    for _ in range(args.repeat):
        elapsed, allowed = run_once(topology, policies, cluster)
        times.append(elapsed)
    cells = len(topology.pods) ** 2 * len(PORTS)
    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, python {platform.python_version()}")
    print(
        f"{len(topology.pods)} pods, {len(topology.namespaces)} namespaces, {len(policies)} policies, "
        f"{len(cluster)} cluster policies, "
        f"{cells:,} cells ({allowed:,} allowed)"
    )
    print(f"best {min(times):.3f} s, median {statistics.median(times):.3f} s over {args.repeat} runs")


if __name__ == "__main__":
    main()
