"""How long one probe round takes on the emulated backend.

The upstream e2e topology: namespaces x, y, z with pods a, b, c, each serving 80
and 81 on TCP and UDP. One round probes every (source, destination, port) cell,
a pod's traffic to itself included: 9 x 9 x 4 = 324 probes: the 162 TCP probes of
a round are 9 curl processes (one per source pod, a transfer per destination),
the 162 UDP probes 162 nc processes. Two cases, with the 1 s probe timeout:

* no policy: all 324 allowed (target: at most 0.3 s per round);
* default deny (Ingress and Egress) in every namespace: the 288 cells between two
  pods are blocked, each as soon as the kernel reports the drop of its packet;
  the 36 self cells stay allowed, because a pod's traffic to its own address never
  leaves it (target: 0.5 s).

A round includes the checks the backend makes before it (the ruleset listed and
compared, links, one request to each server). CPU per round counts this process,
its probe processes and the endpoint servers.

Run as root: ``python benchmarks/bench_emulated.py [--rounds 5] [--workers N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.backends.base import Options  # noqa: E402
from harness.backends.emulated import probe_workers  # noqa: E402
from harness.core.errors import HarnessError  # noqa: E402
from harness.core.plan import probe_grid  # noqa: E402
from harness.core.policy import parse_policy  # noqa: E402
from harness.core.settings import ImplementationSettings  # noqa: E402
from harness.core.state import DesiredState  # noqa: E402
from harness.core.topology import NamespaceSpec, PodSpec, PortSpec, Protocol, Topology  # noqa: E402

TARGETS = {"no policy": 0.3, "default deny": 0.5}


def upstream_topology() -> Topology:
    ports = tuple(
        PortSpec(port, protocol, f"serve-{port}-{protocol.value.lower()}")
        for port in (80, 81)
        for protocol in (Protocol.TCP, Protocol.UDP)
    )
    return Topology(
        namespaces=tuple(NamespaceSpec(ns) for ns in "xyz"),
        pods=tuple(PodSpec(ns, pod, {"pod": pod}, ports) for ns in "xyz" for pod in "abc"),
    )


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0].split(" (")[0]
    return f"{os.cpu_count()} CPUs ({model}), kernel {platform.release()}, {curl}, Python {platform.python_version()}"


def process_cpu(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_seconds(servers: list[int]) -> float:
    """CPU time used so far by this process, its reaped children (curl, nc) and the
    endpoint servers (still running, so not among the reaped children)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + sum(process_cpu(p) for p in servers)


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (default 5)")
    parser.add_argument("--workers", type=probe_workers, default=None, help="probes in flight at once (default: the backend's)")
    parser.add_argument("--timeout", type=float, default=1.0, help="probe timeout in seconds (default 1)")
    args = parser.parse_args()

    from harness.backends import emulated

    try:
        backend = emulated.create(Options(probe_workers=args.workers))
    except HarnessError as err:
        print(err, file=sys.stderr)
        return 2
    topology = upstream_topology()
    probes = probe_grid(topology, topology.port_keys(), probe_self=True)
    print(f"machine: {machine()}; {load()} before")
    print(
        f"probes per round: {len(probes)} ({len(topology.pods)} sources x {len(topology.pods)} destinations x "
        f"{len(topology.port_keys())} ports, self included); workers: {backend.probe_workers}"
    )
    met = True
    with backend:
        started = time.monotonic()
        backend.deploy(topology, ImplementationSettings())
        print(f"deploy: {time.monotonic() - started:.2f}s")
        deny = [
            parse_policy(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "default-deny", "namespace": ns},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                }
            )
            for ns in "xyz"
        ]
        for case in TARGETS:
            if case == "default deny":
                backend.converge(DesiredState(topology).with_policies(deny))
            times = []
            cpu = []
            counts: Counter[str] = Counter()
            for _ in range(args.rounds):
                before = cpu_seconds(backend.server_pids)
                started = time.monotonic()
                results = backend.probe(probes, args.timeout)
                times.append(time.monotonic() - started)
                cpu.append(cpu_seconds(backend.server_pids) - before)
                counts = Counter({o.value: n for o, n in results.outcome_counts().items()})
            target = TARGETS[case]
            ok = max(times) <= target
            met &= ok
            print(
                f"{case:>12}: median {statistics.median(times):.2f}s, min {min(times):.2f}s, max {max(times):.2f}s "
                f"over {args.rounds} rounds (target <= {target:g}s: {'met' if ok else 'NOT met'}); "
                f"CPU per round {statistics.median(cpu):.2f}s; last round: {dict(sorted(counts.items()))}"
            )
    print(f"{load()} after")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
