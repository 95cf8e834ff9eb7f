"""Asking the kernel of a network namespace over netlink, and loading rulesets with
libnftables in this process.

Every test creates its own network namespace (root) and compares what the
netlink queries and the libnftables context say with what the real ``nft`` and
``ip`` commands say about that namespace; the host's own namespace is never
touched, which the tests check too.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from harness.backends.emulated import missing_requirements
from harness.backends.emulated.integrity import echo_problems, echoed_marks, rule_marks
from harness.backends.emulated.netlink import NamespaceNetlink
from harness.backends.emulated.nftlib import NftContext
from harness.core.errors import BackendError

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

SCRIPT = """table inet probe-test {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr 192.168.1.10 jump x-b comment "x/a to x/b"
\t}
\tchain x-b {
\t\tip daddr 192.168.1.11 tcp dport 80 accept comment "x/p ingress[0]"
\t\tlog prefix "nph 1 d0" group 1 drop comment "x/b: not allowed by any Ingress policy"
\t}
}
"""


def nft(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], check=True, capture_output=True, text=True).stdout


def host_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], check=True, capture_output=True, text=True).stdout


def test_the_generation_moves_with_every_transaction_and_only_then(netns: str) -> None:
    kernel = NamespaceNetlink(netns)
    try:
        start = kernel.nftables_generation()
        assert kernel.nftables_generation() == start
        nft(netns, "add", "table", "inet", "one")
        assert kernel.nftables_generation() == start + 1
        nft(netns, "list", "ruleset")  # reading commits nothing
        assert kernel.nftables_generation() == start + 1
        nft(netns, "add", "chain", "inet", "one", "c")
        nft(netns, "delete", "table", "inet", "one")
        assert kernel.nftables_generation() == start + 3
    finally:
        kernel.close()


def test_link_states_are_what_ip_reports(netns: str) -> None:
    subprocess.run(["ip", "-n", netns, "link", "add", "left", "type", "veth", "peer", "name", "right"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "left", "up"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "right", "up"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "add", "lone", "type", "veth", "peer", "name", "other"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lone", "up"], check=True)
    listed = json.loads(subprocess.run(["ip", "-n", netns, "-j", "link", "show"], check=True, capture_output=True).stdout)
    kernel = NamespaceNetlink(netns)
    try:
        states = kernel.link_states()
    finally:
        kernel.close()
    assert states == {link["ifname"]: link["operstate"] for link in listed}
    assert states["left"] == states["right"] == "UP"
    assert states["lone"] == "LOWERLAYERDOWN" and states["other"] == "DOWN"


def test_a_conntrack_flush_with_nothing_to_flush_is_no_error(netns: str) -> None:
    kernel = NamespaceNetlink(netns)
    try:
        kernel.flush_conntrack()
        kernel.flush_conntrack()
    finally:
        kernel.close()


def test_a_namespace_that_does_not_exist_is_named() -> None:
    with pytest.raises(BackendError, match="cannot open netlink sockets in network namespace nph-kq-absent"):
        NamespaceNetlink("nph-kq-absent")


def test_a_script_loads_in_the_namespace_and_echoes_what_the_kernel_made(netns: str) -> None:
    before = host_tables()
    context = NftContext(netns)
    try:
        echo = context.run(SCRIPT, "loading")
        assert echo_problems("probe-test", "the test namespace", SCRIPT, echo) == []
        assert (
            echoed_marks(echo, "probe-test")
            == rule_marks(SCRIPT)
            == rule_marks(nft(netns, "list", "table", "inet", "probe-test"))
        )
        # Replacing it in one transaction, as every load after a network's first does.
        replaced = context.run("delete table inet probe-test\n" + SCRIPT.replace("tcp dport 80", "tcp dport 81"), "loading")
        assert echoed_marks(replaced, "probe-test") == rule_marks(SCRIPT)
        assert "tcp dport 81" in nft(netns, "list", "table", "inet", "probe-test")
    finally:
        context.close()
    assert host_tables() == before  # the host's ruleset never saw it
    assert "probe-test" not in host_tables()


def test_a_script_nftables_refuses_is_an_error_with_its_message(netns: str) -> None:
    context = NftContext(netns)
    try:
        with pytest.raises(BackendError) as info:
            context.run("table inet t {\n\tchain c {\n\t\ttcp dport 99999 accept\n\t}\n}\n", "loading the ruleset")
        message = str(info.value)
        assert message.startswith("loading the ruleset: nftables refused the script: ")
        assert "Error: Service out of range" in message
        # Nothing of a refused transaction is in force, and the context still works.
        assert nft(netns, "list", "ruleset").strip() == ""
        assert "add table inet probe-test" in context.run(SCRIPT, "loading")
    finally:
        context.close()
    with pytest.raises(BackendError, match="the nftables context of .* is closed"):
        context.run(SCRIPT, "loading")


def test_what_nft_echo_prints_is_read_chain_by_chain() -> None:
    # As nftables 1.0.6 echoes the script above (recorded on this machine).
    echo = (
        "add table inet probe-test\n"
        "add chain inet probe-test forward { type filter hook forward priority filter; policy accept; }\n"
        "add chain inet probe-test x-b\n"
        'add rule inet probe-test forward ip saddr 192.168.1.10 jump x-b comment "x/a to x/b"\n'
        'add rule inet probe-test x-b ip daddr 192.168.1.11 tcp dport 80 accept comment "x/p ingress[0]"\n'
        'add rule inet probe-test x-b log prefix "nph 1 d0" group 1 drop comment "x/b: not allowed by any Ingress policy"\n'
        "# new generation 2 by process 100 (nft)\n"
    )
    assert echoed_marks(echo, "probe-test") == {
        "forward": [("x/a to x/b",)],
        "x-b": [("x/p ingress[0]",), ("nph 1 d0", "x/b: not allowed by any Ingress policy")],
    }
    assert echo_problems("probe-test", "the node namespace", SCRIPT, echo) == []
    assert echo_problems("probe-test", "the node namespace", SCRIPT, "") == [
        "the nftables table probe-test is missing from the node namespace"
    ]
    shorter = "\n".join(line for line in echo.splitlines() if "nph 1 d0" not in line)
    assert echo_problems("probe-test", "the node namespace", SCRIPT, shorter) == [
        "chain x-b of table probe-test in the node namespace holds 1 rule(s), not the 2 loaded"
    ]
