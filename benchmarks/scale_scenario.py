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
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import APPS, TIERS, policy_manifest  # noqa: E402

NAMESPACES = 20
SEED = 20261121


def policy(rng: random.Random, i: int, namespace: str) -> dict[str, Any]:
    """The ``i``-th policy, of the model benchmark's mix (bench_model.py), in ``namespace``."""
    return policy_manifest(rng, i, namespace)


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
