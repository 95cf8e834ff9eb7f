"""Large scenarios on the emulated backend, through the path a user runs.

Writes one scenario per size (N namespaces x 10 pods, each pod serving 80/TCP and
53/UDP; in every namespace a default-deny ingress policy and a policy admitting
its own namespace), then runs ``python -m pytest FILE --backend emulated`` on it
with default options and reports whether it passed, how long it took, and how
many cells it probed. 10 x 10 probes 100 x 99 x 2 = 19,800 cells, 20 x 10
probes 200 x 199 x 2 = 79,600; cross-namespace cells are blocked (each ended by
its drop), same-namespace cells allowed.

Run as root: ``python benchmarks/bench_emulated_scale.py [--sizes 10 20] [--pods 10]``.
Figures measured while other work runs on the machine are not meaningful.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def scenario(namespaces: int, pods: int) -> dict[str, object]:
    names = [f"ns{i:02d}" for i in range(namespaces)]
    policies: list[dict[str, object]] = []
    for ns in names:
        policies += [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny-ingress", "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "allow-same-namespace", "namespace": ns},
                "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
            },
        ]
    return {
        "description": f"{namespaces} namespaces x {pods} pods: each namespace reaches only itself.",
        "tags": ["benchmark"],
        "namespaces": {
            ns: {"pods": {f"p{j:02d}": {"labels": {"app": f"p{j:02d}"}, "ports": ["80/TCP", "53/UDP"]} for j in range(pods)}}
            for ns in names
        },
        "policies": policies,
        "expect": {"default": "blocked", "rules": [{"from": f"{ns}/*", "to": f"{ns}/*", "result": "allowed"} for ns in names]},
    }


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20], help="numbers of namespaces (default 10 20)")
    parser.add_argument("--pods", type=int, default=10, help="pods per namespace (default 10)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the emulated backend needs root", file=sys.stderr)
        return 2
    print(f"{os.cpu_count()} CPUs; load average {load()} before")
    ok = True
    with tempfile.TemporaryDirectory(prefix="netpol-scale-") as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"scale-{size}x{args.pods}.yaml"
            path.write_text(yaml.safe_dump(scenario(size, args.pods), sort_keys=False))
            pods = size * args.pods
            cells = pods * (pods - 1) * 2
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    str(path),
                    "-o",
                    f"netpol_scenarios={tmp}",  # where the plugin collects scenarios from
                    "--backend",
                    "emulated",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            elapsed = time.monotonic() - started
            summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
            passed = done.returncode == 0 and re.search(r"\b1 passed\b", summary) is not None
            ok &= passed
            print(
                f"{size} namespaces x {args.pods} pods ({pods} pods, {cells} cells): "
                f"{'passed' if passed else 'FAILED'} in {elapsed:.1f}s ({summary}); load average {load()}"
            )
            if not passed:
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
