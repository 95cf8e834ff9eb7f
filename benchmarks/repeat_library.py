"""Run the whole scenario library several times in a row and compare the verdicts.

Each run is ``python -m pytest scenarios/ --backend emulated`` with a JUnit XML
report; the script reads every test's outcome (passed, failed, xfailed, skipped,
error) from it, and at the end prints, per run, the wall time and the counts,
then every test whose outcome was not the same in all runs (with what it was in
each). ``--busy`` keeps one core busy with a spinning process during the runs, to
show the verdicts do not depend on a quiet machine.

Run as root, when nothing else runs on the machine (the times mean nothing
otherwise): ``python benchmarks/repeat_library.py --runs 20`` and
``python benchmarks/repeat_library.py --runs 5 --busy``. Exits 1 when some verdict
differed between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Spins on one core until killed (``--busy``).
SPIN = "while True: pass"


def outcomes(junit: Path) -> dict[str, str]:
    """Test id → passed, failed, error, skipped or xfailed, from a JUnit XML report."""
    verdicts: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        verdict = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                verdict = "failed" if child.tag == "failure" else "error"
            elif child.tag == "skipped":
                verdict = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        verdicts[name] = verdict
    return verdicts


@contextlib.contextmanager
def busy_core(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs of the library (default 20)")
    parser.add_argument("--busy", action="store_true", help="keep one core busy during the runs")
    parser.add_argument("--backend", default="emulated", help="backend (default emulated)")
    parser.add_argument("paths", nargs="*", default=["scenarios/"], help="what to run (default scenarios/)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{os.cpu_count()} CPUs; load average {load} before; {'one core kept busy' if args.busy else 'no added load'}")
    runs: list[dict[str, str]] = []
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="netpol-repeat-") as tmp, busy_core(args.busy):
        for number in range(1, args.runs + 1):
            junit = Path(tmp) / f"run-{number}.xml"
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    *args.paths,
                    "--backend",
                    args.backend,
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junitxml={junit}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            times.append(time.monotonic() - started)
            if not junit.exists():
                print(f"run {number}: no report (exit {done.returncode})\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                return 2
            runs.append(outcomes(junit))
            counts = Counter(runs[-1].values())
            print(f"run {number}: {times[-1]:.1f}s, " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())), flush=True)
    names = sorted(set().union(*runs))
    differing = {name: [run.get(name, "missing") for run in runs] for name in names}
    differing = {name: seen for name, seen in differing.items() if len(set(seen)) > 1}
    print(
        f"{len(runs)} runs of {len(names)} tests: median {sorted(times)[len(times) // 2]:.1f}s, "
        f"min {min(times):.1f}s, max {max(times):.1f}s; {len(differing)} test(s) with differing verdicts"
    )
    for name, seen in differing.items():
        print(f"  {name}: " + " ".join(seen))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
