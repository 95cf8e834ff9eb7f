"""The emulated backend's parts that need no root: names, the NetworkPolicy →
nftables compiler, the reading of probe results, the ``--probe-workers`` option
and its open-file limit, and running batches of commands."""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.backends.emulated import probe_workers
from harness.backends.emulated.names import RunId, endpoint_netns_names, interface_names
from harness.backends.emulated.probes import ProbeCommand, interpret, probe_command
from harness.backends.emulated.ruleset import (
    ChainMeaning,
    RuleMeaning,
    RulesetInput,
    block_networks,
    compile_ruleset,
    merge_ranges,
    render_ruleset,
    render_self_rulesets,
)
from harness.backends.emulated.system import RUN_ALL_CONCURRENCY, run_all
from harness.core.errors import BackendError
from harness.core.matrix import Outcome
from harness.core.policy import IPBlock, NetworkPolicy, PolicyType, parse_policy
from harness.core.topology import ExternalHost, NamespaceSpec, PodSpec, PortSpec, Protocol, Topology

pytestmark = pytest.mark.emulated

REPO = Path(harness.__file__).resolve().parent.parent

Net = ipaddress.IPv4Network
IP = ipaddress.IPv4Address

TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x"), NamespaceSpec("y", {"team": "blue"})),
    pods=(
        PodSpec("x", "a", {"pod": "a"}, (PortSpec(80),)),
        PodSpec("x", "b", {"pod": "b"}, (PortSpec(8080, Protocol.TCP, "web"),)),
        PodSpec("y", "a", {"pod": "a"}, (PortSpec(9090, Protocol.TCP, "web"), PortSpec(53, Protocol.UDP, "web"))),
    ),
    externals=(ExternalHost("api", IP("203.0.113.10"), (PortSpec(443),)),),
)
ADDRESSES = {"x/a": IP("192.168.1.1"), "x/b": IP("192.168.1.2"), "y/a": IP("192.168.2.1"), "api": IP("203.0.113.10")}
INTERFACES = {"x/a": "veth0", "x/b": "veth1", "y/a": "veth2", "api": "veth3"}


def policy(namespace: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    return parse_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def render(*policies: NetworkPolicy, ipblock_matches_pods: bool = True) -> str:
    return render_ruleset(RulesetInput("nph-1-abcd", TOPOLOGY, ADDRESSES, INTERFACES, policies, ipblock_matches_pods))


def chain(ruleset: str, name: str) -> list[str]:
    """The rules of chain ``name``, comments removed."""
    lines = ruleset.split(f"chain {name} {{\n", 1)[1].split("\t}\n", 1)[0].splitlines()
    return [line.strip().split(' comment "')[0] for line in lines]


def test_run_ids_embed_the_owner_pid() -> None:
    run = RunId(4242, "9f3c01ab")
    assert (run.name, run.node, run.table) == ("nph-4242-9f3c01ab", "nph-4242-9f3c01ab-node", "nph-4242-9f3c01ab")
    assert RunId.parse("nph-4242-9f3c01ab-x.a") == run
    assert RunId.parse("nph-4242-9f3c01ab.json") == run
    assert RunId.parse("nph-4242-9f3c-x.a") == RunId(4242, "9f3c")  # a shorter token of an older run
    assert RunId.parse("nph-rec-1") is None and RunId.parse("other-1-abcd") is None


def test_new_run_ids_carry_32_random_bits() -> None:
    tokens = {RunId.new().token for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(token) == 8 and int(token, 16) >= 0 for token in tokens)
    assert RunId.new().pid == os.getpid()


def test_interface_names_fit_ifnamsiz_whatever_the_endpoint_names() -> None:
    ids = [f"namespace-{i}/a-rather-long-pod-name-{i}" for i in range(1200)]
    names = interface_names(ids)
    assert names[ids[0]] == "veth0" and names[ids[-1]] == "veth1199"
    assert len(set(names.values())) == len(ids) and max(len(n) for n in names.values()) <= 15


def test_netns_names_are_readable_and_unique() -> None:
    topology = Topology(
        namespaces=(NamespaceSpec("ext"),),
        pods=(PodSpec("ext", "api"),),
        externals=(ExternalHost("api", IP("203.0.113.1")),),
    )
    names = endpoint_netns_names(RunId(1, "abcd"), topology)
    assert names == {"ext/api": "nph-1-abcd-ext.api", "api": "nph-1-abcd-ext.api~2"}


def test_block_networks_subtract_excepts_and_pods() -> None:
    block = IPBlock(Net("10.0.0.0/24"), (Net("10.0.0.0/25"),))
    assert block_networks(block) == [Net("10.0.0.128/25")]
    assert block_networks(block, [IP("10.0.0.200")]) == [
        Net("10.0.0.128/26"),
        Net("10.0.0.192/29"),
        Net("10.0.0.201/32"),
        Net("10.0.0.202/31"),
        Net("10.0.0.204/30"),
        Net("10.0.0.208/28"),
        Net("10.0.0.224/27"),
    ]
    assert block_networks(IPBlock(Net("10.0.0.0/8")), [IP("192.168.1.1")]) == [Net("10.0.0.0/8")]
    assert block_networks(IPBlock(ipaddress.IPv6Network("fd00::/64"))) == []


def test_merge_ranges() -> None:
    assert merge_ranges([(90, 95), (80, 80), (81, 85), (84, 88)]) == [(80, 88), (90, 95)]


def test_without_policies_nothing_is_isolated() -> None:
    ruleset = render()
    assert "vmap" not in ruleset and "drop" not in ruleset and "admit" not in ruleset
    assert ruleset.startswith("table inet nph-1-abcd\ndelete table inet nph-1-abcd\ntable inet nph-1-abcd {\n")


def test_only_reply_traffic_is_accepted_by_connection_state() -> None:
    # An original-direction packet of a flow admitted earlier (a reused UDP source
    # port) must meet the policies in force, so no "ct state established accept".
    ruleset = render(policy("x", "deny-b", {"podSelector": {"matchLabels": {"pod": "b"}}}))
    assert chain(ruleset, "forward") == [
        "type filter hook forward priority filter; policy accept;",
        "ct state established ct direction reply accept",
        "ct state related accept",
        'oifname vmap { "veth1" : jump ingress-x/b }',
        # What the policies let through to an address nobody owns (the node's default
        # route leads into "sink"): answered as a router without a route answers.
        'oifname "sink" log prefix "nph 0 u0" group 1 reject with icmp type net-unreachable',
    ]
    data = RulesetInput("nph-1-abcd", TOPOLOGY, ADDRESSES, INTERFACES, (policy("x", "a", {"podSelector": {}}),))
    assert chain(render_self_rulesets(data)["x/a"], "output")[1:3] == [
        "ct state established ct direction reply accept",
        "ct state related accept",
    ]


def test_only_selected_pods_get_chains_and_an_empty_rule_list_drops_all() -> None:
    ruleset = render(policy("x", "deny-b", {"podSelector": {"matchLabels": {"pod": "b"}}}))
    assert '\t\toifname vmap { "veth1" : jump ingress-x/b }\n' in ruleset
    assert "iifname" not in ruleset
    assert chain(ruleset, "ingress-x/b") == ['log prefix "nph 0 d0" group 1 drop']


def test_peers_ports_and_ranges() -> None:
    ruleset = render(
        policy(
            "x",
            "b",
            {
                "podSelector": {"matchLabels": {"pod": "b"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                        "ports": [{"port": 80}, {"port": 81, "endPort": 90}],
                    },
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}], "ports": [{"protocol": "UDP"}]},
                    {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]},
                    {"ports": [{"port": "web"}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": "none"}}}]},
                ],
            },
        )
    )
    assert chain(ruleset, "ingress-x/b") == [
        "ip saddr { 192.168.1.1 } meta l4proto tcp th dport { 80-90 } goto admit-0",
        "ip saddr { 192.168.2.1 } meta l4proto udp goto admit-1",
        "ip saddr { 192.168.1.1, 192.168.2.1 } goto admit-2",
        "meta l4proto tcp th dport { 8080 } goto admit-3",  # x/b's own "web"
        'log prefix "nph 0 d0" group 1 drop',  # the last rule selects nobody: it allows nothing
    ]
    # Each admitting rule says which rule it is, for the first packet of each flow
    # (for every UDP datagram), and returns to the forward chain.
    assert chain(ruleset, "admit-3") == [
        'meta l4proto udp log prefix "nph 0 a3" group 1',
        'meta l4proto != udp ct state new log prefix "nph 0 a3" group 1',
    ]
    assert ' goto admit-3 comment "x/b ingress[3]"\n' in ruleset


def test_egress_named_ports_resolve_per_destination() -> None:
    ruleset = render(
        policy(
            "x",
            "a",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"ports": [{"port": "web"}, {"port": "web", "protocol": "UDP"}]},
                    {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]},
                ],
            },
        )
    )
    assert chain(ruleset, "egress-x/a") == [
        "meta l4proto tcp ip daddr . th dport { 192.168.1.2 . 8080, 192.168.2.1 . 9090 } goto admit-0",
        "meta l4proto udp ip daddr . th dport { 192.168.2.1 . 53 } goto admit-0",  # the same rule
        "ip daddr { 203.0.113.0/24 } meta l4proto tcp th dport { 443 } goto admit-1",
        'log prefix "nph 0 d0" group 1 drop',
    ]


def test_ip_blocks_match_pods_only_when_asked() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.1.0/24", "except": ["192.168.1.128/25"]}}]}],
    }
    assert chain(render(policy("x", "b", spec)), "ingress-x/b")[0] == "ip saddr { 192.168.1.0/25 } goto admit-0"
    without_pods = chain(render(policy("x", "b", spec), ipblock_matches_pods=False), "ingress-x/b")[0]
    # x/a (.1) and x/b (.2) are cut out of the block.
    assert without_pods == (
        "ip saddr { 192.168.1.0, 192.168.1.3, 192.168.1.4/30, 192.168.1.8/29, 192.168.1.16/28, "
        "192.168.1.32/27, 192.168.1.64/26 } goto admit-0"
    )


def test_self_traffic_tables_for_isolated_pods_only() -> None:
    data = RulesetInput(
        "nph-1-abcd", TOPOLOGY, ADDRESSES, INTERFACES, (policy("x", "a", {"podSelector": {"matchLabels": {"pod": "a"}}}),)
    )
    tables = render_self_rulesets(data)
    assert tables["x/b"] == "table inet nph-1-abcd\ndelete table inet nph-1-abcd\n"
    assert "\t\tip saddr 192.168.1.1 ip daddr 192.168.1.1 jump ingress-x/a\n" in tables["x/a"]
    # The same chain, with the same log prefix, as in the node's ruleset.
    assert chain(tables["x/a"], "ingress-x/a") == ['log prefix "nph 0 d0" group 1 drop']


def test_log_prefixes_name_the_chain_or_the_rule_and_the_generation() -> None:
    policies = (
        policy("x", "db", {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"ports": [{"port": 8080}]}]}),
        policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )
    compiled = compile_ruleset(RulesetInput("nph-1-abcd", TOPOLOGY, ADDRESSES, INTERFACES, policies, generation=7))
    index = compiled.index
    assert index.generation == 7 and index.unreachable == "nph 7 u0"
    assert dict(index.admits) == {"nph 7 a0": RuleMeaning(PolicyType.INGRESS, "x/db ingress[0]")}
    assert dict(index.drops) == {
        "nph 7 d0": ChainMeaning(PolicyType.EGRESS, "x/a", ("x/deny",)),
        "nph 7 d1": ChainMeaning(PolicyType.INGRESS, "x/a", ("x/deny",)),
        "nph 7 d2": ChainMeaning(PolicyType.EGRESS, "x/b", ("x/deny",)),
        "nph 7 d3": ChainMeaning(PolicyType.INGRESS, "x/b", ("x/db", "x/deny")),
    }
    assert index.isolating("x/b", PolicyType.INGRESS) == ("x/db", "x/deny")
    assert index.isolating("y/a", PolicyType.INGRESS) == ()
    for prefix in [*index.admits, *index.drops]:
        assert f'log prefix "{prefix}" group 1' in compiled.text
    assert compiled.self_tables == {}
    with_self = compile_ruleset(RulesetInput("nph-1-abcd", TOPOLOGY, ADDRESSES, INTERFACES, policies, generation=7), True)
    assert with_self.index == index and 'log prefix "nph 7 d3" group 1 drop' in with_self.self_tables["x/b"]


def _tcp(identity: str = "x/b") -> ProbeCommand:
    return probe_command("ns", Protocol.TCP, "192.168.1.2", 80, identity, 1.0)


def _udp() -> ProbeCommand:
    return probe_command("ns", Protocol.UDP, "192.168.1.2", 80, "x/b", 1.0)


@pytest.mark.parametrize(
    ("command", "returncode", "stdout", "stderr", "elapsed", "expected"),
    [
        (_tcp(), 0, b"x/b", b"", 0.01, (Outcome.ALLOWED, "")),
        (_tcp(), 0, b"x/c", b"", 0.01, (Outcome.WRONG_RESPONDER, "answered by 'x/c', expected 'x/b'")),
        (
            _tcp(),
            28,
            b"",
            b"* Connection timed out after 1001 milliseconds\ncurl: (28) Connection timed out",
            1.0,
            (Outcome.BLOCKED, "timeout"),
        ),
        (
            _tcp(),
            28,
            b"",
            b"*   Trying 192.168.1.2:80...\n* Connected to 192.168.1.2 (192.168.1.2) port 80 (#0)\n> GET / HTTP/1.1\n"
            b"* Operation timed out after 1001 milliseconds with 0 bytes received\ncurl: (28) Operation timed out",
            1.0,
            (Outcome.WRONG_RESPONDER, "connected, nothing answered"),
        ),
        (
            _tcp(),
            7,
            b"",
            b"* connect to 192.168.1.2 port 80 failed: Connection refused\ncurl: (7) Failed",
            0.0,
            (Outcome.REFUSED, "connection refused"),
        ),
        (
            _tcp(),
            7,
            b"",
            b"* Immediate connect fail for 10.0.0.1: Network is unreachable\ncurl: (7) x",
            0.0,
            (Outcome.ERROR, "network is unreachable"),
        ),
        (
            _tcp(),
            56,
            b"",
            b"curl: (56) Recv failure: Connection reset by peer",
            0.1,
            (Outcome.ERROR, "curl exit 56: curl: (56) Recv failure: Connection reset by peer"),
        ),
        (_tcp(), None, b"", b"", 3.0, (Outcome.ERROR, "curl did not finish within 3s and was killed")),
        (_udp(), 0, b"x/b", b"", 0.01, (Outcome.ALLOWED, "")),
        (_udp(), 0, b"", b"", 1.0, (Outcome.BLOCKED, "timeout")),
        (_udp(), 0, b"", b"", 0.01, (Outcome.REFUSED, "port unreachable")),
        (_udp(), 1, b"", b"nc: getaddrinfo: bad", 0.01, (Outcome.ERROR, "nc exit 1: nc: getaddrinfo: bad")),
    ],
)
def test_reading_probe_results(
    command: ProbeCommand, returncode: int | None, stdout: bytes, stderr: bytes, elapsed: float, expected: tuple[Outcome, str]
) -> None:
    assert interpret(command, returncode, stdout, stderr, elapsed) == expected


def test_udp_waits_are_whole_seconds() -> None:
    command = probe_command("ns", Protocol.UDP, "192.168.1.2", 53, "x/b", 1.5)
    assert command.shell == "echo probe | ip netns exec ns nc -u -n -W 1 -w 2 192.168.1.2 53"
    assert command.limit == 4.0


@pytest.mark.parametrize("text", ["8", "512", "1"])
def test_probe_workers_option_accepts_whole_numbers_from_one(text: str) -> None:
    assert probe_workers(text) == int(text)


@pytest.mark.parametrize("text", ["0", "-3", "many", "2.5", ""])
def test_probe_workers_option_rejects_the_rest_with_a_clear_message(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        probe_workers(text)
    assert str(info.value) == f"must be a whole number of at least 1 (probes run at once), got {text!r}"


def test_probe_workers_option_on_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--probe-workers", "0", "--collect-only", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 4
    assert "error: argument --probe-workers: must be a whole number of at least 1 (probes run at once), got '0'" in done.stderr


CAPPED_WORKERS = """\
import resource
from harness.backends.emulated.backend import EmulatedBackend
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
backend = EmulatedBackend(probe_workers=512)
print(backend.probe_workers, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        (128, 256, "64 256"),  # the soft limit is raised to the hard one, and that caps the workers
        (1024, 4096, "512 4096"),  # 512 probes need about 2048 descriptors: raised, not capped
    ],
)
def test_probe_workers_fit_the_open_file_limit(soft: int, hard: int, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CAPPED_WORKERS.format(soft=soft, hard=hard)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == expected, done.stderr


def test_run_all_names_every_failure_and_reaps_every_process(children_running: Callable[[str], list[int]]) -> None:
    commands: dict[str, tuple[list[str], str]] = {
        "fine": (["cat"], "input\n"),
        "bad": (["sh", "-c", "echo oops >&2; exit 3"], ""),
        "gone": (["/nonexistent/tool"], ""),
        "slow": (["sleep", "5"], ""),
    }
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        run_all(commands, "doing things", timeout=0.5)
    assert time.monotonic() - started < 3
    assert str(info.value) == (
        "doing things failed: bad: `sh -c 'echo oops >&2; exit 3'` failed: oops; "
        "gone: /nonexistent/tool is not installed; slow: `sleep 5` did not finish within 0.5s"
    )
    assert children_running("sleep") == []


def test_run_all_runs_a_bounded_number_at_once() -> None:
    count = 3 * RUN_ALL_CONCURRENCY
    started = time.monotonic()
    run_all({str(i): (["sleep", "0.2"], "") for i in range(count)}, "sleeping")
    # Three waves of 0.2 s at least: never all at once.
    assert time.monotonic() - started >= 0.55
