"""Change impact at cluster scale: the topology of bench_model.py (1,000 pods in 20
namespaces, three port/protocol pairs) with 200 policies at the base, and a head where
every one of them is rewritten and 20 are added (220 changed policies). Timed: parsing
both policy sets as the loader does, building both reference models, computing the
impact (matrices, grouping, attribution) and rendering every group's summary and the
JSON.

    python benchmarks/bench_impact.py [--repeat 5]

The target is at most 2 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import PORTS, build_manifests, build_topology  # noqa: E402

from harness.core.addressing import plan_addresses  # noqa: E402
from harness.core.policy import parse_policy  # noqa: E402
from harness.core.topology import Topology  # noqa: E402
from harness.engine.impact import ImpactSide, StepImpact, compute_impact  # noqa: E402
from harness.model import ReferenceModel  # noqa: E402


def run_once(topology: Topology, base: list[dict[str, Any]], head: list[dict[str, Any]]) -> tuple[float, StepImpact]:
    started = time.perf_counter()
    addresses = plan_addresses(topology)
    base_model = ReferenceModel(topology, [parse_policy(m, "base.yaml") for m in base], addresses)
    head_model = ReferenceModel(topology, [parse_policy(m, "head.yaml") for m in head], addresses)
    impact = compute_impact(ImpactSide(base_model, PORTS), ImpactSide(head_model, PORTS))
    for group in impact.groups:
        group.summary()
    json.dumps(impact.to_json())
    return time.perf_counter() - started, impact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    topology = build_topology(random.Random(20261121))
    base = build_manifests(random.Random(1), 200)
    head = build_manifests(random.Random(2), 200) + build_manifests(random.Random(3), 20, prefix="added")
    times = []
    impact = None
    for _ in range(args.repeat):
        elapsed, impact = run_once(topology, base, head)
        times.append(elapsed)
    assert impact is not None
    causes = {c.policy for g in impact.groups for c in g.causes}
    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, python {platform.python_version()}")
    print(
        f"{len(topology.pods)} pods, {len(topology.namespaces)} namespaces, {len(base)} base and {len(head)} head policies, "
        f"{len(impact.edits)} changed; {impact.opened:,} cells opened, {impact.closed:,} closed, in {len(impact.groups)} groups "
        f"blaming {len(causes)} policies"
    )
    print(f"best {min(times):.3f} s, median {statistics.median(times):.3f} s over {args.repeat} runs")


if __name__ == "__main__":
    main()
