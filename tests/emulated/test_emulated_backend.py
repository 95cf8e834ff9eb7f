"""The emulated backend on real network namespaces, nftables, curl and nc.

One deployment (x/a, x/b, y/a, y/b and the external host ``api``) is shared by the
module and reset between tests; each test applies policies and asserts the
outcome of concrete cells. Needs root, Linux, and iproute2, nftables,
netcat-openbsd and curl; skipped with the reason otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

import harness
from harness.backends.base import Options
from harness.backends.emulated import cleanup_leftovers, missing_requirements
from harness.backends.emulated.backend import EmulatedBackend
from harness.backends.emulated.names import RunId
from harness.backends.emulated.network import EmulatedNetwork
from harness.backends.emulated.runner import Job, run_jobs
from harness.backends.emulated.why import ChainAction, ChainVerdict
from harness.core.addressing import plan_addresses
from harness.core.errors import BackendError, BackendUnavailable, UnknownName
from harness.core.matrix import Cell as MatrixCell
from harness.core.matrix import CellSet, Observation, Outcome
from harness.core.policy import NetworkPolicy, PolicyType, parse_policy
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.state import DesiredState
from harness.core.topology import (
    NAMESPACE_NAME_LABEL,
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    Topology,
)
from harness.engine.probing import ProbeEngine, ProbeSettings
from tests.drivers import Probe, StepDriver, expecting

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

REPO = Path(harness.__file__).resolve().parent.parent
TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP
Cell = tuple[str, str, str]


def _ports(*specs: tuple[int, Protocol] | tuple[int, Protocol, str]) -> tuple[PortSpec, ...]:
    return tuple(PortSpec(*spec) for spec in specs)


#: Named port "web" is 8080 on x/b and 9090 on y/a; each also serves the other
#: number, unnamed, so a wrongly resolved named port shows.
TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x", {"team": "red"}), NamespaceSpec("y", {"team": "blue"})),
    pods=(
        PodSpec("x", "a", {"pod": "a"}, _ports((80, TCP), (80, UDP), (80, SCTP))),
        PodSpec(
            "x",
            "b",
            {"pod": "b"},
            _ports((80, TCP), (81, TCP), (82, TCP), (83, TCP), (8080, TCP, "web"), (9090, TCP), (80, UDP)),
        ),
        PodSpec("y", "a", {"pod": "a"}, _ports((80, TCP), (8080, TCP), (9090, TCP, "web"), (80, UDP))),
        PodSpec("y", "b", {"pod": "b"}, _ports((80, TCP), (80, UDP))),
    ),
    externals=(ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), _ports((443, TCP), (80, TCP))),),
)


def policy(namespace: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    return parse_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def probe_cells(backend: StepDriver, cells: Sequence[Cell], topology: Topology = TOPOLOGY) -> dict[Cell, Observation]:
    """Probe ``(source, destination, "80/TCP")`` cells in one round."""
    probes = {cell: Probe(topology.pod(cell[0]), topology.endpoint(cell[1]), PortProtocol.parse(cell[2])) for cell in cells}
    results = backend.probe(list(probes.values()), 1.0)
    return {cell: results[p] for cell, p in probes.items()}


def outcomes(backend: StepDriver, cells: Sequence[Cell], topology: Topology = TOPOLOGY) -> dict[Cell, str]:
    return {cell: obs.outcome.value for cell, obs in probe_cells(backend, cells, topology).items()}


def host_network_state() -> dict[str, str]:
    """The host network namespace's links, addresses, routes, rules, nftables and
    forwarding settings."""
    commands = {
        "links": ["ip", "-d", "link", "show"],
        "addresses": ["ip", "addr", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "rules": ["ip", "rule", "show"],
        "nft": ["nft", "list", "ruleset"],
        "sysctl": ["sysctl", "net.ipv4.ip_forward", "net.ipv4.icmp_ratelimit"],
    }
    return {name: subprocess.run(argv, capture_output=True, text=True, check=True).stdout for name, argv in commands.items()}


def netns_of_run(prefix: str) -> list[str]:
    netns_dir = Path("/run/netns")
    return sorted(p.name for p in netns_dir.iterdir() if p.name.startswith(prefix)) if netns_dir.is_dir() else []


def alive(pid: int) -> bool:
    """A running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def all_gone(pids: Sequence[int]) -> bool:
    """True once none of ``pids`` runs (a SIGKILL takes a moment to land)."""
    try:
        Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.05), retry=retry_if_result(lambda ok: not ok), reraise=True)(
            lambda: not any(alive(pid) for pid in pids)
        )
    except RetryError:
        return False
    return True


def wait_until_port_listens(netns: str, port: int, protocol: Protocol) -> None:
    flags = "-lnt" if protocol is TCP else "-lnu"

    def listening() -> bool:
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", flags], capture_output=True, text=True).stdout
        return f":{port} " in out

    Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), retry=retry_if_result(lambda ok: not ok), reraise=True)(listening)


@pytest.fixture(scope="module")
def host_before() -> dict[str, str]:
    return host_network_state()


@pytest.fixture(scope="module")
def deployed(host_before: dict[str, str]) -> Iterator[StepDriver]:
    from harness.backends import emulated

    backend = StepDriver(emulated.create(Options()))
    try:
        backend.deploy(TOPOLOGY)
        yield backend
    finally:
        backend.close()


@pytest.fixture
def backend(deployed: StepDriver) -> Iterator[StepDriver]:
    deployed.reset()
    yield deployed
    deployed.use_settings(ImplementationSettings())
    deployed.reset()


DENY_ALL_X = policy("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


# -- basics ------------------------------------------------------------------------


def test_without_policies_every_served_port_answers_with_its_identity(backend: StepDriver) -> None:
    results = probe_cells(
        backend,
        [
            ("x/a", "x/b", "80/TCP"),
            ("x/a", "x/b", "80/UDP"),
            ("y/b", "x/a", "80/TCP"),
            ("x/b", "api", "443/TCP"),
            ("x/a", "x/a", "80/TCP"),
        ],
    )
    assert {cell: obs.outcome for cell, obs in results.items()} == dict.fromkeys(results, Outcome.ALLOWED)
    tcp = results[("x/a", "x/b", "80/TCP")]
    address = backend.network.addresses["x/b"]
    assert tcp.command == (
        f"ip netns exec {backend.network.netns['x/a']} curl -q -sS -v --noproxy '*' --connect-timeout 1 -m 1 http://{address}:80/"
    )
    assert 0 < tcp.elapsed < 1
    assert results[("x/a", "x/b", "80/UDP")].command == (
        f"echo probe | ip netns exec {backend.network.netns['x/a']} nc -u -n -W 1 -w 1 {address} 80"
    )


def test_reproduce_command_runs_the_same_probe_by_hand(backend: StepDriver) -> None:
    probe = Probe(TOPOLOGY.pod("y/a"), TOPOLOGY.pod("x/b"), PortProtocol(80, TCP))
    command = backend.reproduce_command(probe)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stdout) == (0, "x/b")
    udp = backend.reproduce_command(Probe(TOPOLOGY.pod("y/a"), TOPOLOGY.pod("x/b"), PortProtocol(80, UDP)))
    done = subprocess.run(udp, shell=True, capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stdout) == (0, "x/b")


def test_a_port_nobody_serves_is_refused_not_blocked(backend: StepDriver) -> None:
    results = probe_cells(backend, [("x/a", "y/b", "81/TCP"), ("x/a", "y/b", "81/UDP")])
    assert [(o.outcome, o.detail) for o in results.values()] == [
        (Outcome.REFUSED, "connection refused"),
        (Outcome.REFUSED, "port unreachable"),
    ]


def test_sctp_is_unsupported_and_runs_nothing(backend: StepDriver) -> None:
    assert backend.capabilities.protocols == frozenset({TCP, UDP})
    sctp = Probe(TOPOLOGY.pod("x/b"), TOPOLOGY.pod("x/a"), PortProtocol(80, SCTP))
    tcp = Probe(TOPOLOGY.pod("x/b"), TOPOLOGY.pod("x/a"), PortProtocol(80, TCP))
    observed = ProbeEngine(backend.backend, ProbeSettings(timeout=1.0)).observe(expecting([sctp.cell, tcp.cell]))
    assert (observed[sctp.cell].outcome, observed[sctp.cell].detail) == (
        Outcome.UNSUPPORTED,
        "SCTP is not available in this kernel",
    )
    assert observed[tcp.cell].outcome is Outcome.ALLOWED
    # Asked directly (the engine never does), the backend runs nothing either.
    direct = backend.probe([sctp], 1.0)[sctp]
    assert (direct.outcome, direct.detail) == (Outcome.ERROR, "cannot probe SCTP: SCTP is not available in this kernel")


def test_pods_get_the_addresses_the_harness_plans(deployed: StepDriver) -> None:
    # The model backend uses the same plan, so both speak of the same addresses.
    assert dict(deployed.network.addresses) == plan_addresses(TOPOLOGY)
    assert deployed.deploy(TOPOLOGY).addresses == plan_addresses(TOPOLOGY)


def test_describe(backend: StepDriver) -> None:
    info = backend.describe()
    assert info["backend"] == "emulated" and info["cni"] == "nftables"
    assert info["cni_version"].startswith("v") and info["kernel"] == os.uname().release


# -- enforcement -------------------------------------------------------------------


def test_default_deny_drops_both_directions_and_the_kernel_says_which_chain(backend: StepDriver) -> None:
    backend.apply_policies([DENY_ALL_X])
    results = probe_cells(
        backend,
        [
            ("x/a", "x/b", "80/TCP"),
            ("x/a", "x/b", "80/UDP"),  # egress and ingress of x
            ("y/a", "x/b", "80/TCP"),
            ("x/b", "y/a", "80/TCP"),
            ("x/a", "api", "443/TCP"),
            ("y/a", "y/b", "80/TCP"),  # y is not isolated
            ("x/a", "x/a", "80/TCP"),  # a pod reaching itself never leaves it (as in Calico)
        ],
    )
    got = {cell: (obs.outcome.value, obs.detail) for cell, obs in results.items()}
    egress = "dropped: egress of {} isolated by x/deny-all, no rule allows it"
    assert got == {
        # The egress chain drops first: the packet never meets x/b's ingress chain.
        ("x/a", "x/b", "80/TCP"): ("blocked", egress.format("x/a")),
        ("x/a", "x/b", "80/UDP"): ("blocked", egress.format("x/a")),
        ("y/a", "x/b", "80/TCP"): ("blocked", "dropped: ingress of x/b isolated by x/deny-all, no rule allows it"),
        ("x/b", "y/a", "80/TCP"): ("blocked", egress.format("x/b")),
        ("x/a", "api", "443/TCP"): ("blocked", egress.format("x/a")),
        ("y/a", "y/b", "80/TCP"): ("allowed", "egress of y/a not isolated; ingress of y/b not isolated"),
        ("x/a", "x/a", "80/TCP"): ("allowed", "a pod's traffic to its own address never leaves it (self_traffic: allowed)"),
    }
    # Blocked the moment the drop happened, not after the 1 s timeout; the packet
    # was still dropped, as Calico drops it (nothing answered it, and nc waited).
    assert all(results[cell].elapsed < 0.5 for cell in results)
    trace = backend.traces[MatrixCell("y/a", "x/b", PortProtocol(80, TCP))]
    assert trace.verdicts == (
        ChainVerdict(PolicyType.EGRESS, "y/a", ChainAction.NOT_ISOLATED),
        ChainVerdict(PolicyType.INGRESS, "x/b", ChainAction.DROPPED, ("x/deny-all",)),
    )
    assert trace.drop == trace.verdicts[1]


def test_delete_lifts_the_policy(backend: StepDriver) -> None:
    backend.apply_policies([DENY_ALL_X])
    assert outcomes(backend, [("y/a", "x/b", "80/TCP")]) == {("y/a", "x/b", "80/TCP"): "blocked"}
    backend.delete_policies(["x/deny-all"])
    assert outcomes(backend, [("y/a", "x/b", "80/TCP")]) == {("y/a", "x/b", "80/TCP"): "allowed"}


CELLS_TO_XB = [("x/a", "x/b", "80/TCP"), ("y/a", "x/b", "80/TCP"), ("y/b", "x/b", "80/TCP")]


def test_pod_selector_peer_means_pods_of_the_policy_namespace(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "from-a",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}],
                },
            )
        ]
    )
    results = probe_cells(backend, CELLS_TO_XB)
    assert {cell: obs.outcome.value for cell, obs in results.items()} == {
        ("x/a", "x/b", "80/TCP"): "allowed",
        ("y/a", "x/b", "80/TCP"): "blocked",  # pod=a, but in another namespace
        ("y/b", "x/b", "80/TCP"): "blocked",
    }
    # The allowed cell names the rule that admitted it, as its comment in the ruleset does.
    assert (
        results[("x/a", "x/b", "80/TCP")].detail == "egress of x/a not isolated; ingress of x/b admitted by x/from-a ingress[0]"
    )
    assert results[("y/a", "x/b", "80/TCP")].detail == "dropped: ingress of x/b isolated by x/from-a, no rule allows it"
    assert 'comment "x/from-a ingress[0]"' in backend.ruleset


def test_namespace_selector_peer_means_every_pod_of_matching_namespaces(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "from-blue",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
                },
            )
        ]
    )
    assert outcomes(backend, CELLS_TO_XB) == {
        ("x/a", "x/b", "80/TCP"): "blocked",
        ("y/a", "x/b", "80/TCP"): "allowed",
        ("y/b", "x/b", "80/TCP"): "allowed",
    }


def test_both_selectors_in_one_peer_must_both_match(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "from-y-a",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "y"}},
                                    "podSelector": {"matchLabels": {"pod": "a"}},
                                }
                            ]
                        }
                    ],
                },
            )
        ]
    )
    assert outcomes(backend, CELLS_TO_XB) == {
        ("x/a", "x/b", "80/TCP"): "blocked",  # pod=a, wrong namespace
        ("y/a", "x/b", "80/TCP"): "allowed",
        ("y/b", "x/b", "80/TCP"): "blocked",  # right namespace, wrong pod
    }


def test_traffic_needs_the_sources_egress_and_the_destinations_ingress(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "a-egress-to-y",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
                },
            ),
            policy("y", "b-ingress-from-nobody", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}),
        ]
    )
    assert outcomes(backend, [("x/a", "y/a", "80/TCP"), ("x/a", "y/b", "80/TCP"), ("x/a", "x/b", "80/TCP")]) == {
        ("x/a", "y/a", "80/TCP"): "allowed",
        ("x/a", "y/b", "80/TCP"): "blocked",  # egress allows it, ingress does not
        ("x/a", "x/b", "80/TCP"): "blocked",  # ingress allows it, egress does not
    }


def test_egress_to_an_external_host_only_on_443_by_ip_block(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "a-to-api-443",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}],
                },
            )
        ]
    )
    assert outcomes(
        backend,
        [
            ("x/a", "api", "443/TCP"),
            ("x/a", "api", "80/TCP"),
            ("x/a", "x/b", "80/TCP"),
            ("x/b", "api", "80/TCP"),
        ],
    ) == {
        ("x/a", "api", "443/TCP"): "allowed",
        ("x/a", "api", "80/TCP"): "blocked",
        ("x/a", "x/b", "80/TCP"): "blocked",
        ("x/b", "api", "80/TCP"): "allowed",  # x/b is not selected
    }


def test_ip_block_except_and_whether_it_matches_pods(backend: StepDriver) -> None:
    xa = backend.network.addresses["x/a"]
    backend.apply_policies(
        [
            policy(
                "x",
                "b-from-pod-range",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": [f"{xa}/32"]}}]}],
                },
            )
        ]
    )
    cells = [("x/a", "x/b", "80/TCP"), ("y/a", "x/b", "80/TCP")]
    # As in Calico, an ipBlock also matches pod addresses.
    assert outcomes(backend, cells) == {cells[0]: "blocked", cells[1]: "allowed"}
    backend.use_settings(ImplementationSettings(ipblock_matches_pods=False))
    assert "192.168.0.0/16" not in backend.ruleset
    assert outcomes(backend, cells) == {cells[0]: "blocked", cells[1]: "blocked"}


def test_self_traffic_is_always_allowed_unless_the_scenario_says_policy(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "a-from-b",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                },
            )
        ]
    )
    cells = [("x/a", "x/a", "80/TCP"), ("x/a", "x/a", "80/UDP"), ("x/b", "x/b", "80/TCP"), ("x/b", "x/a", "80/TCP")]
    assert outcomes(backend, cells) == dict.fromkeys(cells, "allowed")  # Calico: self traffic never leaves the pod
    backend.use_settings(ImplementationSettings(self_traffic=SelfTraffic.POLICY))
    results = probe_cells(backend, cells)
    assert {cell: obs.outcome.value for cell, obs in results.items()} == {
        ("x/a", "x/a", "80/TCP"): "blocked",  # x/a's ingress admits only x/b
        ("x/a", "x/a", "80/UDP"): "blocked",
        ("x/b", "x/b", "80/TCP"): "allowed",  # x/b is not isolated
        ("x/b", "x/a", "80/TCP"): "allowed",
    }
    # Dropped by the table in x/a's own namespace, which logs there: known at once.
    assert results[("x/a", "x/a", "80/TCP")].detail == "dropped: ingress of x/a isolated by x/a-from-b, no rule allows it"
    assert results[("x/a", "x/a", "80/TCP")].elapsed < 0.5
    assert results[("x/b", "x/a", "80/TCP")].detail == (
        "egress of x/b not isolated; ingress of x/a admitted by x/a-from-b ingress[0]"
    )
    backend.use_settings(ImplementationSettings())
    assert outcomes(backend, cells[:2]) == dict.fromkeys(cells[:2], "allowed")


def test_named_ports_resolve_on_each_destination_pod(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "a-egress-web",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "web"}]}],
                },
            ),
            policy(
                "x",
                "b-ingress-web",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"ports": [{"port": "web", "protocol": "TCP"}]}],
                },
            ),
        ]
    )
    assert outcomes(
        backend,
        [
            ("x/a", "x/b", "8080/TCP"),
            ("x/a", "x/b", "9090/TCP"),
            ("x/a", "y/a", "9090/TCP"),
            ("x/a", "y/a", "8080/TCP"),
            ("y/b", "x/b", "8080/TCP"),
            ("y/b", "x/b", "80/TCP"),
        ],
    ) == {
        ("x/a", "x/b", "8080/TCP"): "allowed",  # web is 8080 on x/b
        ("x/a", "x/b", "9090/TCP"): "blocked",
        ("x/a", "y/a", "9090/TCP"): "allowed",  # ... and 9090 on y/a
        ("x/a", "y/a", "8080/TCP"): "blocked",
        ("y/b", "x/b", "8080/TCP"): "allowed",  # ingress: x/b's own web port
        ("y/b", "x/b", "80/TCP"): "blocked",
    }


def test_end_port_allows_a_range(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "b-81-82",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"ports": [{"port": 81, "endPort": 82}]}],
                },
            )
        ]
    )
    assert outcomes(backend, [("y/a", "x/b", f"{port}/TCP") for port in (80, 81, 82, 83)]) == {
        ("y/a", "x/b", "80/TCP"): "blocked",
        ("y/a", "x/b", "81/TCP"): "allowed",
        ("y/a", "x/b", "82/TCP"): "allowed",
        ("y/a", "x/b", "83/TCP"): "blocked",
    }


def test_ports_are_per_protocol(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "b-udp-only",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}],
                },
            )
        ]
    )
    assert outcomes(backend, [("y/a", "x/b", "80/UDP"), ("y/a", "x/b", "80/TCP")]) == {
        ("y/a", "x/b", "80/UDP"): "allowed",
        ("y/a", "x/b", "80/TCP"): "blocked",
    }


def test_a_reused_source_port_meets_the_policy_in_force(backend: StepDriver) -> None:
    # The same UDP flow (x/a:40000 -> y/b:80) before and after a policy that denies
    # it: the connection tracking entry of the first must not let the second pass.
    address = backend.network.addresses["y/b"]
    argv = ["ip", "netns", "exec", backend.network.netns["x/a"], "nc", "-u", "-n", "-p", "40000", "-W", "1", "-w", "1"]

    def send() -> str:
        return subprocess.run([*argv, str(address), "80"], input="probe\n", capture_output=True, text=True, timeout=10).stdout

    assert send() == "y/b"
    backend.apply_policies([policy("y", "b-from-nobody", {"podSelector": {"matchLabels": {"pod": "b"}}})])
    assert send() == ""
    backend.delete_policies(["y/b-from-nobody"])
    assert send() == "y/b"


def test_a_connection_nobody_answers_is_a_wrong_responder_not_blocked(backend: StepDriver) -> None:
    # A listener that accepts connections and never says a word: the policies let
    # the probe through, so calling it blocked would be wrong.
    netns = backend.network.netns["y/b"]
    mute = subprocess.Popen(
        # -k: it keeps listening, as a real mute service would for each try of the probe.
        ["ip", "netns", "exec", netns, "nc", "-l", "-k", "-n", "7778"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_port_listens(netns, 7778, TCP)
        target = Probe(TOPOLOGY.pod("x/a"), TOPOLOGY.pod("y/b"), PortProtocol(7778, TCP))
        obs = backend.probe([target], 1.0)[target]
        assert (obs.outcome, obs.detail) == (Outcome.WRONG_RESPONDER, "connected, nothing answered")
    finally:
        mute.kill()
        mute.wait()


def test_udp_counts_as_allowed_only_when_the_reply_arrives(backend: StepDriver) -> None:
    # A listener that receives every datagram and never answers: the datagrams get
    # through (no policy drops them), yet the probe must not call the port open.
    listener = "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('',7777)); " + (
        "[print(s.recv(64).decode().strip(), flush=True) for _ in range(3)]"
    )
    silent = subprocess.Popen(
        ["ip", "netns", "exec", backend.network.netns["y/b"], sys.executable, "-c", listener],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until_port_listens(backend.network.netns["y/b"], 7777, UDP)
        target = Probe(TOPOLOGY.pod("x/a"), TOPOLOGY.pod("y/b"), PortProtocol(7777, UDP))
        obs = backend.probe([target], 1.0)[target]
        assert (obs.outcome, obs.detail) == (Outcome.BLOCKED, "timeout; no policy dropped it")
        out, _ = silent.communicate(timeout=5)
        # The datagram did arrive, on each of the three tries a timeout without a
        # drop gets before it is a verdict.
        assert out == "probe\nprobe\nprobe\n"
    finally:
        if silent.poll() is None:
            silent.kill()
            silent.wait()


def probe_address(backend: StepDriver, source: str, address: str, port: PortProtocol, identity: str) -> Observation:
    """The probe the backend runs, from ``source``'s namespace to any address,
    expecting ``identity`` to answer."""
    emulated = backend.backend
    assert isinstance(emulated, EmulatedBackend)
    observation: Observation = emulated.probe_address(source, address, port, identity, 1.0)
    return observation


def test_a_host_answering_for_another_address_is_a_wrong_responder(backend: StepDriver) -> None:
    # A probe for "ghost" sent to x/b's address: x/b answers, with its own identity.
    address = str(backend.network.addresses["x/b"])
    results = [probe_address(backend, "x/a", address, PortProtocol(80, proto), "ghost") for proto in (TCP, UDP)]
    assert [(o.outcome, o.detail) for o in results] == [
        (Outcome.WRONG_RESPONDER, "answered by 'x/b', expected 'ghost'"),
    ] * 2


def test_relabelling_changes_what_a_policy_selects(backend: StepDriver) -> None:
    backend.apply_policies(
        [
            policy(
                "x",
                "b-from-green",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"team": "green"}},
                                    "podSelector": {"matchLabels": {"role": "client"}},
                                }
                            ]
                        }
                    ],
                },
            )
        ]
    )
    cell = ("y/a", "x/b", "80/TCP")
    assert outcomes(backend, [cell]) == {cell: "blocked"}
    backend.set_namespace_labels("y", {"team": "green", NAMESPACE_NAME_LABEL: "y"})
    assert outcomes(backend, [cell]) == {cell: "blocked"}  # the pod label is still missing
    backend.set_pod_labels("y/a", {"pod": "a", "role": "client"})
    assert outcomes(backend, [cell]) == {cell: "allowed"}
    backend.set_pod_labels("y/a", {"pod": "a"})
    assert outcomes(backend, [cell]) == {cell: "blocked"}
    backend.set_pod_labels("y/a", {"pod": "a", "role": "client"})
    backend.reset()  # declared labels again, no policies
    assert backend.topology == TOPOLOGY
    assert outcomes(backend, [cell]) == {cell: "allowed"}
    with pytest.raises(UnknownName, match="no namespace 'q' is declared"):
        backend.set_namespace_labels("q", {})


def test_policies_are_replaced_by_namespace_and_name(backend: StepDriver) -> None:
    cell = ("y/a", "x/b", "80/TCP")
    backend.apply_policies([policy("x", "p", {"podSelector": {}, "policyTypes": ["Ingress"]})])
    assert outcomes(backend, [cell]) == {cell: "blocked"}
    backend.apply_policies([policy("x", "p", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]})])
    assert outcomes(backend, [cell]) == {cell: "allowed"}
    with pytest.raises(BackendError, match="NetworkPolicy q/p: namespace not part of the deployed topology"):
        backend.apply_policies([policy("q", "p", {"podSelector": {}})])


# -- the sealed network and the host -----------------------------------------------------


def test_unowned_addresses_are_unreachable_and_the_host_is_untouched(backend: StepDriver, host_before: dict[str, str]) -> None:
    # 198.51.100.7 is owned by no emulated host; 192.168.9.9 is an unused pod address.
    results = [
        probe_address(backend, "x/a", "198.51.100.7", PortProtocol(80, TCP), "nowhere"),
        probe_address(backend, "x/a", "192.168.9.9", PortProtocol(80, TCP), "unused"),
        probe_address(backend, "x/a", "198.51.100.7", PortProtocol(80, UDP), "nowhere"),
    ]
    assert [(o.outcome, o.detail) for o in results] == [
        (Outcome.ERROR, "network is unreachable"),
        (Outcome.ERROR, "network is unreachable"),
        # nc ignores the ICMP error; the node's ruleset, which sent it, says so.
        (Outcome.ERROR, "network is unreachable"),
    ]
    # Answered at once, and every time: no rate limit on these answers.
    again = [probe_address(backend, "x/a", "198.51.100.7", PortProtocol(80, proto), "nowhere") for proto in (TCP, UDP, TCP)]
    assert all(o.outcome is Outcome.ERROR and o.elapsed < 0.5 for o in again)
    # The node routes to emulated hosts, and everything else into its sink, which
    # leads nowhere: nothing towards the host.
    node_routes = subprocess.run(
        ["ip", "-n", backend.network.run.node, "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    owned = {str(a) for a in backend.network.addresses.values()}
    assert sorted(line.split()[0] for line in node_routes) == sorted(owned | {"default"})
    assert "default dev sink scope link " in node_routes
    sink = subprocess.run(
        ["ip", "-n", backend.network.run.node, "-o", "link", "show", "sink-end"], capture_output=True, text=True, check=True
    ).stdout
    assert "sink-end@sink" in sink  # its other end is in the node too
    # While the deployment runs, the host namespace is exactly as before it.
    assert host_network_state() == host_before


def test_namespaces_and_table_carry_the_run_prefix(backend: StepDriver) -> None:
    run = backend.network.run
    assert run.name.startswith(f"nph-{os.getpid()}-")
    assert netns_of_run(run.name + "-") == sorted(backend.network.all_netns)
    tables = subprocess.run(
        ["ip", "netns", "exec", run.node, "nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    assert tables.strip() == f"table inet {run.name}"
    assert json.loads(run.state_file.read_text())["pid"] == os.getpid()


# -- the probe runner ------------------------------------------------------------------------


def test_a_job_that_fails_to_start_is_an_error_and_the_round_goes_on(
    deployed: StepDriver, children_running: Callable[[str], list[int]]
) -> None:
    netns = deployed.network.netns["x/a"]
    jobs = [
        Job(netns, ("/nonexistent/probe",), None, 2.0),
        # Fails after the process started (its input is not bytes): the process must
        # be ended and its slot given back, or the single slot would starve the rest.
        Job(netns, ("cat",), cast(bytes, "not bytes"), 2.0),
        *[Job(netns, ("echo", str(i)), None, 2.0) for i in range(3)],
    ]
    results = run_jobs(jobs, workers=1, deadline=20.0)
    assert [(r.returncode, r.error) for r in results[:2]] == [
        (None, "cannot run /nonexistent/probe: No such file or directory"),
        (None, "cannot run cat: TypeError: a bytes-like object is required, not 'str'"),
    ]
    assert [(r.returncode, r.stdout) for r in results[2:]] == [(0, b"0\n"), (0, b"1\n"), (0, b"2\n")]
    assert children_running("cat") == []


def test_a_round_past_its_deadline_ends_with_errors(deployed: StepDriver, children_running: Callable[[str], list[int]]) -> None:
    netns = deployed.network.netns["x/a"]
    started = time.monotonic()
    results = run_jobs([Job(netns, ("sleep", "7"), None, 10.0), Job(netns, ("sleep", "8"), None, 10.0)], 1, deadline=0.5)
    assert time.monotonic() - started < 3
    assert [(r.returncode, r.error) for r in results] == [(None, "the probe round did not finish within 0.5s")] * 2
    assert children_running("sleep") == []


def test_a_namespace_that_cannot_be_entered_fails_its_jobs_only(deployed: StepDriver) -> None:
    jobs = [
        Job("nph-0-00000000-missing", ("echo", "no"), None, 2.0),
        Job(deployed.network.netns["x/a"], ("echo", "yes"), None, 2.0),
    ]
    first, second = run_jobs(jobs, 4)
    assert (first.returncode, first.error) == (
        None,
        "cannot enter network namespace nph-0-00000000-missing: No such file or directory",
    )
    assert (second.returncode, second.stdout) == (0, b"yes\n")


def test_a_namespace_clash_stops_the_build_and_destroy_spares_what_is_not_ours() -> None:
    run = RunId(os.getpid(), secrets.token_hex(4))
    network = EmulatedNetwork(run, SMALL)
    foreign = network.netns["x/a"]
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        with pytest.raises(BackendError) as info:
            network.build()
        assert str(info.value) == f"network namespaces {foreign} already exist; remove them with `ip netns del`"
        assert network.created == [] and network.destroy() == []
        assert netns_of_run(run.name) == [foreign]  # not this network's to delete
    finally:
        subprocess.run(["ip", "netns", "del", foreign], check=True)


# -- lifecycle ---------------------------------------------------------------------------------

SMALL = Topology(
    namespaces=(NamespaceSpec("x"),),
    pods=(PodSpec("x", "a", {}, _ports((80, TCP))), PodSpec("x", "b", {}, _ports((80, UDP)))),
)


def test_redeploy_reuses_the_same_shape_and_rebuilds_another(host_before: dict[str, str]) -> None:
    from harness.backends import emulated

    backend = StepDriver(emulated.create(Options(probe_workers=8)))
    try:
        backend.deploy(SMALL)
        first = backend.network.run
        backend.apply_policies([policy("x", "deny", {"podSelector": {}})])
        relabelled = SMALL.with_pod_labels("x/a", {"app": "new"})
        backend.deploy(relabelled)
        assert backend.network.run == first and backend.topology == relabelled
        assert "drop" not in backend.ruleset  # policies are gone
        bigger = Topology(SMALL.namespaces, SMALL.pods + (PodSpec("x", "c", {}, _ports((80, TCP))),))
        backend.deploy(bigger)
        assert backend.network.run != first
        assert netns_of_run(first.name) == []
        cell = ("x/c", "x/a", "80/TCP")
        assert outcomes(backend, [cell], bigger) == {cell: "allowed"}
        servers = list(backend.server_pids)
        run = backend.network.run
    finally:
        backend.close()
        backend.close()  # idempotent
    assert netns_of_run(run.name) == []
    assert all_gone(servers)
    assert not run.state_file.exists() and not run.log_dir.exists()
    assert host_network_state() == host_before


def test_a_deploy_leaves_the_load_to_the_converge_that_follows_or_to_the_first_probe() -> None:
    from harness.backends import emulated

    backend = emulated.create(Options(probe_workers=8))
    deny = DesiredState(SMALL).with_policies([policy("x", "deny", {"podSelector": {}})])
    cells = CellSet.from_cells([MatrixCell("x/b", "x/a", PortProtocol(80, TCP))])
    (cell,) = cells
    try:
        backend.deploy(SMALL, ImplementationSettings())
        assert backend.ruleset == ""  # nothing loaded yet: the step's converge loads
        backend.converge(deny)
        # The first load only creates the table (nothing to remove: no RCU wait).
        assert "drop" in backend.ruleset and "delete table" not in backend.ruleset
        assert backend.probe(cells, 1.0)[cell].outcome is Outcome.BLOCKED
        # Redeployed with another label: the state in force is "no policies", but
        # only the probe that needs it (no converge came) loads its ruleset.
        backend.deploy(SMALL.with_pod_labels("x/a", {"app": "new"}), ImplementationSettings())
        assert "drop" in backend.ruleset
        assert backend.probe(cells, 1.0)[cell].outcome is Outcome.ALLOWED
        table = backend.network.run.table
        assert "drop" not in backend.ruleset
        assert backend.ruleset.startswith(f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n")
    finally:
        backend.close()


DEPLOY_AND_WAIT = textwrap.dedent("""\
    import json, signal, threading
    from harness.backends import emulated
    from harness.backends.base import Options
    from harness.core.settings import ImplementationSettings
    from harness.core.topology import NamespaceSpec, PodSpec, PortSpec, Protocol, Topology

    {preamble}
    backend = emulated.create(Options())
    backend.deploy(Topology(
        namespaces=(NamespaceSpec("x"),),
        pods=(PodSpec("x", "a", {{}}, (PortSpec(80),)), PodSpec("x", "b", {{}}, (PortSpec(80, Protocol.UDP),))),
    ), ImplementationSettings())
    handler = signal.getsignal(signal.SIGTERM)
    print(json.dumps({{
        "run": backend.network.run.name,
        "pids": backend.server_pids,
        "sigterm": getattr(handler, "__qualname__", str(handler)),
    }}), flush=True)
    threading.Event().wait(60)
""")

#: What the pytest plugin does at configure time, before any backend exists.
PLUGIN_SIGTERM = "import harness.plugin.manager; signal.signal(signal.SIGTERM, harness.plugin.manager._raise_interrupt)"


def _deploy_in_subprocess(preamble: str = "") -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", DEPLOY_AND_WAIT.format(preamble=preamble)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(timeout=10)
        pytest.fail(f"the deploying script failed: {child.stderr.read() if child.stderr else ''}")
    return child, json.loads(line)


def test_sigterm_under_the_plugins_handler_keeps_it_and_still_leaves_nothing() -> None:
    # The plugin turns SIGTERM into KeyboardInterrupt; the backend must not put its
    # own handler over it, and the unwinding must still remove everything.
    child, info = _deploy_in_subprocess(PLUGIN_SIGTERM)
    assert info["sigterm"] == "_raise_interrupt"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert "KeyboardInterrupt: signal 15" in stderr
    assert netns_of_run(info["run"]) == []
    assert all_gone(info["pids"])
    assert not list(Path("/run/netpol-harness").glob(info["run"] + "*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_nothing(signum: int, host_before: dict[str, str]) -> None:
    child, info = _deploy_in_subprocess()
    assert len(netns_of_run(info["run"])) == 3 and all(alive(pid) for pid in info["pids"])
    # A plain script: the backend's own handler closes, then ends the process as the signal would.
    assert info["sigterm"] == "_close_then_default"
    child.send_signal(signum)
    child.communicate(timeout=30)
    assert child.returncode in (-signum, 1, 128 + signum)
    assert netns_of_run(info["run"]) == []
    assert all_gone(info["pids"])
    assert not list(Path("/run/netpol-harness").glob(info["run"] + "*"))


def test_leftovers_of_a_killed_run_are_removed_by_the_next_cleanup() -> None:
    child, info = _deploy_in_subprocess()
    child.kill()
    child.communicate(timeout=30)
    left = netns_of_run(info["run"])
    assert len(left) == 3  # SIGKILL: nothing could clean up
    removed = cleanup_leftovers()
    assert set(left) <= set(removed)
    assert netns_of_run(info["run"]) == []
    assert all_gone(info["pids"])
    assert not list(Path("/run/netpol-harness").glob(info["run"] + "*"))


def test_cleanup_leaves_runs_of_live_processes_alone(deployed: StepDriver) -> None:
    mine = sorted(deployed.network.all_netns)
    cleanup_leftovers()
    assert netns_of_run(deployed.network.run.name + "-") == mine


def test_missing_tools_are_named_with_the_install_command(tmp_path: Path) -> None:
    from harness.backends import emulated

    saved = os.environ["PATH"]
    os.environ["PATH"] = str(tmp_path)  # nothing to find
    try:
        with pytest.raises(BackendUnavailable) as info:
            emulated.create(Options())
    finally:
        os.environ["PATH"] = saved
    assert str(info.value) == "the emulated backend needs: apt-get install curl iproute2 netcat-openbsd nftables"


def test_without_root_it_says_so() -> None:
    script = textwrap.dedent("""\
        import os
        from harness.backends import emulated
        from harness.backends.base import Options
        from harness.core.errors import BackendUnavailable
        os.setegid(65534)
        os.seteuid(65534)  # nobody, from here on
        try:
            emulated.create(Options())
        except BackendUnavailable as err:
            print(err)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert done.stdout.strip() == (
        "the emulated backend needs: run as root (e.g. sudo) to create network namespaces and nftables rules"
    ), done.stderr
