"""A scenario file at cluster scale, written the way a user would write one: 1,000
pods in 20 namespaces, 200 NetworkPolicies with mixed selectors, named ports,
ipBlocks and both directions, every pod serving three ports, and the reference
model as the intent (``expect: {model: true}``).

    python benchmarks/scale_scenario.py OUT.yaml [--pods-per-namespace 50] [--policies 200]

Used by the benchmarks of the whole path (bench_pipeline.py) and of change impact.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import yaml

APPS = ["web", "api", "db", "cache", "worker", "queue", "auth", "metrics"]
TIERS = ["frontend", "backend", "data"]
NAMESPACES = 20
SEED = 20261121


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


def policy(rng: random.Random, i: int, namespace: str) -> dict[str, Any]:
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
        "metadata": {"name": f"policy-{i:03d}", "namespace": namespace},
        "spec": spec,
    }


def scenario(pods_per_namespace: int = 50, policies: int = 200, seed: int = SEED) -> dict[str, Any]:
    rng = random.Random(seed)
    namespaces: dict[str, Any] = {}
    for n in range(NAMESPACES):
        pods = {}
        for j in range(pods_per_namespace):
            labels = {"app": rng.choice(APPS), "tier": rng.choice(TIERS)}
            if rng.random() < 0.3:
                labels["canary"] = "true"
            pods[f"pod{j:02d}"] = {
                "labels": labels,
                "ports": [
                    {"port": 80, "protocol": "TCP", "name": "http"},
                    {"port": 8080, "protocol": "TCP", "name": "metrics"},
                    {"port": 53, "protocol": "UDP", "name": "dns"},
                ],
            }
        namespaces[f"ns{n:02d}"] = {"labels": {"team": f"team{n % 5}", "env": "prod" if n % 2 else "dev"}, "pods": pods}
    return {
        "description": f"{NAMESPACES * pods_per_namespace} pods, {policies} policies, three ports, the model as the intent",
        "namespaces": namespaces,
        "policies": [policy(rng, i, f"ns{i % NAMESPACES:02d}") for i in range(policies)],
        "expect": {"model": True},
    }


def write(path: Path, pods_per_namespace: int = 50, policies: int = 200) -> Path:
    path.write_text(yaml.safe_dump(scenario(pods_per_namespace, policies), sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pods-per-namespace", type=int, default=50)
    parser.add_argument("--policies", type=int, default=200)
    args = parser.parse_args()
    write(args.out, args.pods_per_namespace, args.policies)


if __name__ == "__main__":
    main()
