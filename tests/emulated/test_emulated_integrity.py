"""The emulated backend checks its own network before it trusts a verdict.

Each test builds a small deployment, breaks it from outside the way a user, a
crashed process or another tool could (the nftables table deleted or edited, a
server killed, a link set down), and asserts that the next probe round is an
error naming what broke, never a verdict, and that the next deployment is a new
network. Needs root and the emulated backend's tools.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from harness.backends.base import Options
from harness.backends.emulated import missing_requirements
from harness.backends.emulated.dataplane import NetworkBroken
from harness.backends.emulated.integrity import listing_problems, rule_marks
from harness.core.errors import BackendError
from harness.core.matrix import BLOCKED, Outcome
from harness.core.policy import parse_policy
from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.engine.probing import ProbeEngine, ProbeSettings
from tests.drivers import Probe, StepDriver, expecting

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x"),),
    pods=(
        PodSpec("x", "a", {"pod": "a"}, (PortSpec(80), PortSpec(80, Protocol.UDP))),
        PodSpec("x", "b", {"pod": "b"}, (PortSpec(80), PortSpec(80, Protocol.UDP))),
    ),
)
DENY_B = parse_policy(
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]},
    }
)
A_TO_B = Probe(TOPOLOGY.pod("x/a"), TOPOLOGY.pod("x/b"), PortProtocol(80, Protocol.TCP))


@pytest.fixture
def backend() -> Iterator[StepDriver]:
    from harness.backends import emulated

    created = StepDriver(emulated.create(Options(probe_workers=16)))
    try:
        created.deploy(TOPOLOGY)
        created.apply_policies([DENY_B])
        yield created
    finally:
        created.close()


def node_nft(backend: StepDriver, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", backend.network.run.node, "nft", *args], check=True)


def test_a_deleted_table_makes_the_step_an_error_not_a_pass(backend: StepDriver) -> None:
    assert backend.probe([A_TO_B], 1.0)[A_TO_B].outcome is Outcome.BLOCKED
    first = backend.network.run
    node_nft(backend, "delete", "table", "inet", first.table)
    # Without its table every cell would be "allowed": the engine must not get a verdict.
    engine = ProbeEngine(backend.backend, ProbeSettings(timeout=1.0))
    with pytest.raises(NetworkBroken) as info:
        engine.observe(expecting([A_TO_B.cell], BLOCKED))
    assert isinstance(info.value, BackendError)
    assert str(info.value) == (
        f"the emulated network {first} is broken, so nothing probed on it is a verdict: the nftables table "
        f"{first.table} was deleted from the node namespace. It is rebuilt before the next scenario."
    )
    # Still an error on the next try: a broken network is never trusted again ...
    with pytest.raises(NetworkBroken):
        backend.probe([A_TO_B], 1.0)
    # ... and the next scenario gets a new one, even with the same shape.
    backend.deploy(TOPOLOGY)
    assert backend.network.run != first
    assert not os.path.exists(f"/run/netns/{first.node}")
    assert backend.probe([A_TO_B], 1.0)[A_TO_B].outcome is Outcome.ALLOWED


def test_an_edited_ruleset_is_noticed(backend: StepDriver) -> None:
    run = backend.network.run
    node_nft(backend, "flush", "chain", "inet", run.table, "ingress-x/b")
    with pytest.raises(
        NetworkBroken, match=f"the nftables table {run.table} in the node namespace was changed since it was loaded"
    ):
        backend.probe([A_TO_B], 1.0)


def test_another_table_added_to_the_node_namespace_is_noticed(backend: StepDriver) -> None:
    # Its own chains at the same hooks would decide packets too, though our table is intact.
    run = backend.network.run
    assert backend.probe([A_TO_B], 1.0)[A_TO_B].outcome is Outcome.BLOCKED
    node_nft(backend, "add", "table", "inet", "someone-else")
    with pytest.raises(NetworkBroken) as info:
        backend.probe([A_TO_B], 1.0)
    assert f"the nftables ruleset of the node namespace was changed from outside since table {run.table} was loaded" in str(
        info.value
    )


def test_a_killed_server_makes_the_step_an_error(backend: StepDriver) -> None:
    victim = backend.server_pids[1]  # x/b's
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(NetworkBroken, match=r"the server of x/b has exited \(killed by signal 9\)"):
        backend.probe([A_TO_B], 1.0)


def test_a_link_set_down_makes_the_step_an_error(backend: StepDriver) -> None:
    subprocess.run(["ip", "-n", backend.network.netns["x/a"], "link", "set", "eth0", "down"], check=True)
    with pytest.raises(NetworkBroken, match="the link of x/a is down, not up"):
        backend.probe([A_TO_B], 1.0)


def test_a_server_that_stopped_answering_is_named(backend: StepDriver) -> None:
    # The process lives but answers nothing: stopped (SIGSTOP), as a hung server would be.
    victim = backend.server_pids[0]  # x/a's
    os.kill(victim, signal.SIGSTOP)
    try:
        with pytest.raises(NetworkBroken) as info:
            backend.probe([A_TO_B], 1.0)
    finally:
        os.kill(victim, signal.SIGCONT)
    assert "the server of x/a does not answer on 80/TCP (no answer)" in str(info.value)
    assert "the server of x/a does not answer on 80/UDP (no answer)" in str(info.value)


def test_what_a_listing_keeps_of_a_rendered_script() -> None:
    rendered = (
        "table inet t\ndelete table inet t\ntable inet t {\n\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        '\t\tip saddr { 192.168.1.10 } goto admit-0 comment "x/p ingress[0]"\n'
        '\t\tlog prefix "nph 1 d0" group 1 drop comment "x/b: not allowed by any Ingress policy"\n\t}\n}\n'
    )
    # As `nft list table` prints it (recorded from nftables 1.0.6 on this kind of rule).
    listing = (
        "table inet t {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        '\t\tip saddr 192.168.1.10 goto admit-0 comment "x/p ingress[0]"\n'
        '\t\tlog prefix "nph 1 d0" group 1 drop comment "x/b: not allowed by any Ingress policy"\n\t}\n}\n'
    )
    assert (
        rule_marks(rendered)
        == rule_marks(listing)
        == {"forward": [("x/p ingress[0]",), ("nph 1 d0", "x/b: not allowed by any Ingress policy")]}
    )
    assert listing_problems("t", "the node namespace", rendered, listing) == []
    assert listing_problems("t", "the node namespace", rendered, None) == [
        "the nftables table t is missing from the node namespace"
    ]
    shorter = listing.replace('\t\tip saddr 192.168.1.10 goto admit-0 comment "x/p ingress[0]"\n', "")
    assert listing_problems("t", "the node namespace", rendered, shorter) == [
        "chain forward of table t in the node namespace holds 1 rule(s), not the 2 loaded"
    ]
