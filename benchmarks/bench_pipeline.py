"""The whole path a user runs, at cluster scale: the scenario of scale_scenario.py
(1,000 pods in 20 namespaces, 200 NetworkPolicies, three ports, ``expect: {model:
true}``: 2,997,000 cells) through

* ``python -m pytest --backend model`` in a fresh process: collection, loading and
  planning, the model backend's probe of every cell, the verdict, the reports
  (terminal summary; with ``--report-dir`` also JSON, Markdown and HTML);
* the probe plan every backend receives, the emulated backend's included: loading
  the file and planning its step (the grid of cells and their expected outcomes by
  the reference model, on the addresses the emulated network gives the pods), timed
  inside a fresh process.

    python benchmarks/bench_pipeline.py [--repeat 5]

Targets on a 2-core machine: the pytest process in at most 3 s wall, the plan in at
most 1 s.
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


def wall(command: list[str], cwd: Path) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started, done.returncode


PLAN = """\
import sys, time
from harness.core.addressing import plan_addresses
from harness.scenario import load_scenario
started = time.perf_counter()
(plan,) = load_scenario(sys.argv[1]).plans
assert dict(plan_addresses(plan.topology))
print(time.perf_counter() - started, plan.probes)
"""


def plan_seconds(path: Path) -> tuple[float, int]:
    """Loading the scenario file and planning its step, in a fresh process (nothing
    cached): what it costs before any backend runs. The plan's addresses are those
    the emulated network gives the pods (the model backend plans them the same way)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PLAN, str(path)], capture_output=True, text=True, env=env, check=True)
    seconds, probes = done.stdout.split()
    return float(seconds), int(probes)


def report(name: str, times: list[float], target: float, extra: str = "") -> None:
    best, median = min(times), statistics.median(times)
    verdict = "met" if median <= target else "NOT met"
    print(f"{name:34s} median {median:.2f} s, best {best:.2f} s (target <= {target:g} s: {verdict}){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} before")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scenario = write(work / "scale.yaml")
        pytest_run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--backend", "model", "scale.yaml"]
        runs = [wall(pytest_run, work) for _ in range(args.repeat)]
        assert all(status == 0 for _, status in runs), f"pytest failed: {runs}"
        report("pytest --backend model", [t for t, _ in runs], 3.0)
        with_reports = [wall([*pytest_run, "--report-dir", "reports"], work) for _ in range(args.repeat)]
        assert all(status == 0 for _, status in with_reports), f"pytest failed: {with_reports}"
        report("pytest --backend model --report-dir", [t for t, _ in with_reports], 3.0)
        plans = [plan_seconds(scenario) for _ in range(args.repeat)]
        report("probe plan (load + plan)", [t for t, _ in plans], 1.0, f"; {plans[0][1]:,} cells")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} after")


if __name__ == "__main__":
    main()
