"""probe.sh run for real: POSIX sh (dash, and busybox as in the Alpine-based agnhost
image), with the real curl and OpenBSD netcat, against servers in a private network
namespace with only a loopback interface, so no packet can leave it. Timeouts come
from an nftables drop rule in that namespace.

The script's results are read by the same classifier as the emulated backend's: every
cell here is also classified through the emulated backend's own path
(harness.backends.emulated.probes.interpret) and must come out the same."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.emulated.probes import interpret, probe_command
from harness.core.matrix import Outcome
from harness.core.topology import Protocol
from harness.kube.probe_script import ProbeResult, ProbeTarget, observation, parse_output, script_command

HERE = Path(__file__).resolve().parent
TOOLS = ("ip", "nft", "curl", "nc")
#: The programs the script runs besides the clients: busybox applets in the agnhost image.
APPLETS = ("sh", "tr", "head", "od", "mktemp", "rm", "cat", "grep")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason=f"needs root and {', '.join(TOOLS)} (apt-get install iproute2 nftables curl netcat-openbsd)",
)

Shell = tuple[list[str], str]


def run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
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
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 20)
        assert ready and server.stdout.readline().strip() == "ready", "probe servers did not start"
        yield name
    finally:
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        shutil.rmtree(etc, ignore_errors=True)


def busybox_path(directory: Path) -> str | None:
    """A PATH where the script's own tools are busybox applets, as in the agnhost image;
    curl and nc stay the real clients."""
    busybox = shutil.which("busybox")
    if busybox is None:
        return None
    for tool in APPLETS:
        (directory / tool).symlink_to(busybox)
    return f"{directory}:{os.environ['PATH']}"


@pytest.fixture(params=["dash", "busybox"])
def shell(request: pytest.FixtureRequest, tmp_path: Path) -> Shell:
    if request.param == "dash":
        if shutil.which("dash") is None:
            pytest.skip("dash is not installed")
        return ["dash"], os.environ["PATH"]
    path = busybox_path(tmp_path)
    if path is None:
        pytest.skip("busybox is not installed (apt-get install busybox)")
    return [str(tmp_path / "sh")], path


def probe_round(
    netns: str, shell: Shell, targets: list[ProbeTarget], timeout: float = 1.0, parallel: int = 32, tmpdir: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    argv, path = shell
    args = script_command(targets, timeout, parallel)
    env = [f"PATH={path}", *([f"TMPDIR={tmpdir}"] if tmpdir else [])]
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "env", *env, *argv, "-c", *args[2:]],
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
    T(8, Protocol.TCP, "10.9.9.9", 80),  # no route in the namespace
    T(9, Protocol.SCTP, "127.0.0.1", 9000),  # no /agnhost on this machine
]
EXPECTED = {
    0: (Outcome.ALLOWED, ""),
    1: (Outcome.REFUSED, "connection refused"),
    2: (Outcome.BLOCKED, "timeout"),
    3: (Outcome.WRONG_RESPONDER, "answered by 'y/b', expected 'x/a'"),
    4: (Outcome.WRONG_RESPONDER, "connected, nothing answered"),
    5: (Outcome.ALLOWED, ""),
    6: (Outcome.BLOCKED, "timeout"),
    7: (Outcome.REFUSED, "port unreachable"),
    8: (Outcome.ERROR, "network is unreachable"),
}


def emulated_reading(target: ProbeTarget, result: ProbeResult, timeout: float) -> tuple[Outcome, str]:
    """The same client result, classified the way the emulated backend classifies its own."""
    command = probe_command("ns", target.protocol, target.address, target.port, "x/a", timeout)
    return interpret(command, result.exit_code, result.stdout, result.stderr, result.elapsed)


def test_one_round_classifies_every_kind_of_result_as_the_emulated_backend_does(netns: str, shell: Shell) -> None:
    result, took = probe_round(netns, shell, ROUND)
    assert result.returncode == 0, result.stderr
    lines, problems = parse_output(result.stdout)
    assert problems == []
    assert sorted(lines) == list(range(len(ROUND)))
    seen = {t.id: observation(lines[t.id], t.protocol, "x/a", 1.0, "cmd") for t in ROUND}
    assert {i: (o.outcome, o.detail) for i, o in seen.items() if i in EXPECTED} == EXPECTED
    for target in ROUND[:-1]:
        assert emulated_reading(target, lines[target.id], 1.0) == (seen[target.id].outcome, seen[target.id].detail)
    sctp = seen[9]
    assert sctp.outcome is Outcome.ERROR and sctp.detail.startswith("agnhost connect exit 127: ")
    # A dropped SYN waits for the timeout; a refused connection does not.
    assert 0.9 <= seen[2].elapsed <= 2.5
    assert seen[1].elapsed < 0.5
    # Concurrent: four probes wait about a second each, the round takes about one.
    assert took < 4.0


def test_the_clients_output_arrives_byte_for_byte(netns: str, shell: Shell) -> None:
    result, _ = probe_round(netns, shell, [T(0, Protocol.TCP, "127.0.0.1", 18080), T(1, Protocol.TCP, "127.0.0.1", 18081)])
    lines, _ = parse_output(result.stdout)
    assert lines[0].stdout == b"x/a"
    assert lines[0].exit_code == 0
    # curl -v: the handshake, the request and the reply headers, CRs included.
    assert b"* Connected to 127.0.0.1" in lines[0].stderr and b"< HTTP/1.0 200 OK\r\n" in lines[0].stderr
    assert lines[1].exit_code == 7 and b"Connection refused" in lines[1].stderr


def test_parallel_limit_runs_batches(netns: str, shell: Shell) -> None:
    dropped = [T(i, Protocol.TCP, "127.0.0.1", 18082) for i in range(3)]
    _, concurrent = probe_round(netns, shell, dropped, timeout=0.5, parallel=3)
    result, batched = probe_round(netns, shell, dropped, timeout=0.5, parallel=1)
    lines, _ = parse_output(result.stdout)
    assert [observation(lines[i], Protocol.TCP, "x/a", 0.5, "").outcome for i in range(3)] == [Outcome.BLOCKED] * 3
    assert concurrent < 1.4 <= batched


def test_the_script_leaves_no_scratch_files(netns: str, shell: Shell, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result, _ = probe_round(netns, shell, ROUND[:3], tmpdir=scratch)
    assert len(parse_output(result.stdout)[0]) == 3
    assert list(scratch.iterdir()) == []


def test_no_writable_scratch_space_is_reported(netns: str, shell: Shell, tmp_path: Path) -> None:
    result, _ = probe_round(netns, shell, ROUND[:1], tmpdir=tmp_path / "missing")
    lines, problems = parse_output(result.stdout)
    assert lines == {}
    assert problems == [f"cannot create a temporary directory in {tmp_path / 'missing'}"]
    assert result.returncode == 3


def test_leftover_arguments_are_reported(netns: str, shell: Shell) -> None:
    argv, path = shell
    args = script_command([T(0, Protocol.TCP, "127.0.0.1", 18080)], 1.0)
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "env", f"PATH={path}", *argv, "-c", *args[2:], "1", "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines, problems = parse_output(result.stdout)
    assert observation(lines[0], Protocol.TCP, "x/a", 1.0, "").outcome is Outcome.ALLOWED
    assert problems == ["2 argument(s) left over: 1 -"]
    assert result.returncode == 2
