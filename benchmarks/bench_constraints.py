"""Constraints at cluster scale, through the paths a user runs: the scenario of
scale_scenario.py (1,000 pods in 20 namespaces, 200 NetworkPolicies, three ports)
checked against a constraints file with one constraint of each form (no production
pod reaches the internet, production is isolated, nothing but web reaches the
databases), by

* ``python -m harness constraints FILE SCENARIO`` (the model's check without pytest),
  against ``python -m harness validate SCENARIO`` (loading and planning alone);
* ``python -m pytest --backend model --netpol-constraints FILE``, against the same
  run without constraints.

    python benchmarks/bench_constraints.py [--repeat 3]

Prints the best and median wall time of each command and the largest resident set
of its process; the difference between a pair is the cost of the constraints. The
target is at most 2 s and 500 MB more than without constraints on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_scenario import write  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

CONSTRAINTS = """\
constraints:
  - name: no-prod-internet
    description: No production pod reaches an address outside the cluster, except the corporate network.
    no_egress_outside_cluster:
      namespaces: {matchLabels: {env: prod}}
      except: [{cidr: 10.0.0.0/8}, {cidr: 203.0.113.0/24, ports: [443/TCP]}]
  - name: production-isolated
    description: A production pod admits and sends only what some policy allows.
    isolated: {namespaces: {matchLabels: {env: prod}}}
  - name: databases-from-web
    description: Nothing but web pods reaches a database, and they do on 80/TCP.
    rules:
      - {from: "*", to: {podSelector: {matchLabels: {app: db}}}, result: blocked}
      - from: {podSelector: {matchLabels: {app: web}}}
        to: {podSelector: {matchLabels: {app: db}}}
        port: 80/TCP
        result: allowed
"""


def measure(command: list[str], cwd: Path) -> tuple[float, int, int]:
    """Wall time, largest resident set (bytes) and exit status of one run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "scenarios").mkdir()
        write(work / "scenarios" / "scale.yaml")
        (work / "constraints.yaml").write_text(CONSTRAINTS)
        (work / "pytest.ini").write_text("[pytest]\nnetpol_scenarios = scenarios\n")
        python = sys.executable
        pytest_run = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--backend", "model", "scenarios"]
        commands = {
            "validate": [python, "-m", "harness", "validate", "scenarios/scale.yaml"],
            "constraints": [python, "-m", "harness", "constraints", "constraints.yaml", "scenarios/scale.yaml"],
            "pytest": pytest_run,
            "pytest --netpol-constraints": [*pytest_run, "--netpol-constraints", "constraints.yaml"],
        }
        print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, python {platform.python_version()}")
        print(f"cores this process may use: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.2f}")
        for name, command in commands.items():
            runs = [measure(command, work) for _ in range(args.repeat)]
            times = [t for t, _, _ in runs]
            memory = max(m for _, m, _ in runs)
            statuses = sorted({s for _, _, s in runs})
            print(
                f"{name:28s} best {min(times):.2f} s, median {statistics.median(times):.2f} s, "
                f"max resident {memory / 2**20:.0f} MB, exit {statuses}"
            )


if __name__ == "__main__":
    main()
