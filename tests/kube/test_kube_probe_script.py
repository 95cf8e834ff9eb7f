"""probe.sh run for real: POSIX sh (dash, and busybox as in the agnhost image), socat,
against servers in a private network namespace with only a loopback interface, so
no packet can leave it. Timeouts come from an nftables drop rule in that namespace."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.core.matrix import Outcome
from harness.core.topology import Protocol
from harness.kube.probe_script import ProbeClass, ProbeTarget, observation, parse_output, script_command

HERE = Path(__file__).resolve().parent
TOOLS = ("ip", "nft", "socat")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason=f"needs root and {', '.join(TOOLS)} (apt-get install iproute2 nftables socat)",
)


def run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def netns():
    name = f"netpol-probe-test-{uuid.uuid4().hex[:8]}"
    etc = Path("/etc/netns") / name
    server = None
    try:
        run("ip", "netns", "add", name)
        # ip netns exec bind-mounts this over /etc/resolv.conf: lookups stay on loopback.
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "netns", "exec", name, "nft", "add", "table", "inet", "nph_probe")
        run("ip", "netns", "exec", name, "nft", "add chain inet nph_probe input { type filter hook input priority 0 ; }")
        run("ip", "netns", "exec", name, "nft", "add", "rule", "inet", "nph_probe", "input", "tcp", "dport", "18082", "drop")
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, str(HERE / "probe_servers.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([server.stdout], [], [], 20)
        assert ready and server.stdout.readline().strip() == "ready", "probe servers did not start"
        yield name
    finally:
        if server is not None:
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        shutil.rmtree(etc, ignore_errors=True)


def busybox_path(tmp_path: Path) -> str | None:
    """A PATH where sh, tr and cut are busybox applets, as in the Alpine-based agnhost image."""
    busybox = shutil.which("busybox")
    if busybox is None:
        return None
    for tool in ("sh", "tr", "cut"):
        (tmp_path / tool).symlink_to(busybox)
    return f"{tmp_path}:{os.environ['PATH']}"


@pytest.fixture(params=["dash", "busybox"])
def shell(request, tmp_path):
    if request.param == "dash":
        if shutil.which("dash") is None:
            pytest.skip("dash is not installed")
        return ["dash"], os.environ["PATH"]
    path = busybox_path(tmp_path)
    if path is None:
        pytest.skip("busybox is not installed (apt-get install busybox)")
    return [str(tmp_path / "sh")], path


def probe_round(netns, shell, targets, timeout=1.0, parallel=32):
    argv, path = shell
    args = script_command(targets, timeout, parallel)
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "env", f"PATH={path}", *argv, "-c", *args[2:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


T = ProbeTarget
ROUND = [
    T(0, Protocol.TCP, "127.0.0.1", 18080),  # answers x/a
    T(1, Protocol.TCP, "127.0.0.1", 18081),  # nothing listens
    T(2, Protocol.TCP, "127.0.0.1", 18082),  # SYN dropped
    T(3, Protocol.TCP, "127.0.0.1", 18083),  # answers y/b
    T(4, Protocol.TCP, "127.0.0.1", 18084),  # accepts, says nothing
    T(5, Protocol.UDP, "127.0.0.1", 18053),  # answers x/a
    T(6, Protocol.UDP, "127.0.0.1", 18054),  # receives, never answers
    T(7, Protocol.UDP, "127.0.0.1", 18055),  # nothing listens: ICMP port unreachable
    T(8, Protocol.TCP, "nonexistent.invalid", 80),  # name lookup fails
    T(9, Protocol.SCTP, "127.0.0.1", 9000),  # no SCTP client here
    T(10, Protocol.TCP, "10.9.9.9", 80),  # no route in the namespace
]


def test_one_round_classifies_every_kind_of_result(netns, shell):
    result, took = probe_round(netns, shell, ROUND)
    assert result.returncode == 0, result.stderr
    lines, problems = parse_output(result.stdout)
    assert problems == []
    assert sorted(lines) == list(range(len(ROUND)))
    classes = {i: lines[i].klass for i in lines}
    assert classes == {
        0: ProbeClass.OK,
        1: ProbeClass.REFUSED,
        2: ProbeClass.TIMEOUT,
        3: ProbeClass.OK,
        4: ProbeClass.NOREPLY,
        5: ProbeClass.OK,
        6: ProbeClass.TIMEOUT,
        7: ProbeClass.REFUSED,
        8: ProbeClass.DNS,
        9: ProbeClass.UNKNOWN,
        10: ProbeClass.OTHER,
    }
    outcomes = {i: observation(lines[i], "x/a", "").outcome for i in lines}
    assert outcomes == {
        0: Outcome.ALLOWED,
        1: Outcome.REFUSED,
        2: Outcome.BLOCKED,
        3: Outcome.WRONG_RESPONDER,
        4: Outcome.WRONG_RESPONDER,
        5: Outcome.ALLOWED,
        6: Outcome.BLOCKED,
        7: Outcome.REFUSED,
        8: Outcome.ERROR,
        9: Outcome.ERROR,
        10: Outcome.ERROR,
    }
    assert lines[3].responder == "y/b"
    # A dropped SYN waits for the timeout; a refused connection does not.
    assert 0.9 <= lines[2].elapsed <= 2.0
    assert lines[1].elapsed < 0.5
    # Concurrent: five probes wait about a second each, the round takes about one.
    assert took < 3.0


def test_parallel_limit_runs_batches(netns, shell):
    dropped = [T(i, Protocol.TCP, "127.0.0.1", 18082) for i in range(3)]
    _, concurrent = probe_round(netns, shell, dropped, timeout=0.5, parallel=3)
    result, batched = probe_round(netns, shell, dropped, timeout=0.5, parallel=1)
    lines, _ = parse_output(result.stdout)
    assert {line.klass for line in lines.values()} == {ProbeClass.TIMEOUT}
    assert concurrent < 1.2 <= batched


def test_leftover_arguments_are_reported(netns, shell):
    argv, path = shell
    args = script_command([T(0, Protocol.TCP, "127.0.0.1", 18080)], 1.0)
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "env", f"PATH={path}", *argv, "-c", *args[2:], "1", "TCP"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines, problems = parse_output(result.stdout)
    assert lines[0].klass is ProbeClass.OK
    assert problems == ["2 argument(s) left over: 1 TCP"]
    assert result.returncode == 2
