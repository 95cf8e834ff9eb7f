"""Reading NFLOG messages, the probe round's retries and time limits.

The message bytes below were recorded from this project's own deployment on Linux
6.18 (nfnetlink_log): a SYN from x/a (192.168.1.10) to x/b (192.168.1.11) port 80
dropped by x/b's ingress chain, logged with the prefix "nph 2 d0". The rest runs
real processes and, where marked, a real emulated network (root).
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Iterator

import pytest

from harness.backends import emulated
from harness.backends.base import Options
from harness.backends.emulated import missing_requirements, runner
from harness.backends.emulated.nflog import LoggedPacket, parse_messages
from harness.backends.emulated.rounds import ProbeResult, needs_another_try
from harness.backends.emulated.runner import Exited, Job, ProcessPool
from harness.core.matrix import Outcome
from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from tests.drivers import Probe, StepDriver

NEEDS = missing_requirements()
needs_root = pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS))
pytestmark = pytest.mark.emulated

RECORDED = bytes.fromhex(
    "c40000000004000000000000000000000200000108000100080002000d000a006e7068203220643000000000080004000000000408000500"
    "000000051000080000060000ce212cfc5434000006000f000001000006001100000e0000120010000299d53c5111ce212cfc543408000000"
    "14000300000000006b1140cc00000000000d0f75400009004500003c3a0c40003f067e4ac0a8010ac0a8010baa7e0050b7ef968700000000"
    "a002faf083940000020405b40402080ad397691e000000000103030a"
)
DROPPED_SYN = LoggedPacket("nph 2 d0", "192.168.1.10", "192.168.1.11", 6, 43646, 80)


def acknowledgement(code: int) -> bytes:
    """An NLMSG_ERROR message as the kernel answers a request (``code`` 0: done)."""
    return struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -code) + b"\0" * 16


def test_a_recorded_drop_is_read() -> None:
    assert parse_messages(RECORDED) == ([DROPPED_SYN], [])


def test_several_messages_in_one_datagram_and_acknowledgements() -> None:
    # The kernel may put several messages in one datagram, each padded to 4 bytes.
    packets, errors = parse_messages(RECORDED + acknowledgement(0) + RECORDED + acknowledgement(16))
    assert packets == [DROPPED_SYN, DROPPED_SYN] and errors == [0, 16]


def test_truncated_or_foreign_messages_are_skipped() -> None:
    assert parse_messages(RECORDED[:10]) == ([], [])
    ipv6 = bytearray(RECORDED)
    payload = RECORDED.index(bytes.fromhex("4500003c"))
    ipv6[payload] = 0x60
    assert parse_messages(bytes(ipv6)) == ([], [])


@pytest.mark.parametrize(
    ("outcome", "detail", "drop_seen", "again"),
    [
        (Outcome.ERROR, "curl did not finish within 3s and was killed", False, True),
        (Outcome.BLOCKED, "timeout", False, True),  # no drop explains it: the machine may be slow
        (Outcome.BLOCKED, "dropped: ingress of x/b isolated by x/p, no rule allows it", True, False),
        (Outcome.WRONG_RESPONDER, "connected, nothing answered", False, True),
        (Outcome.WRONG_RESPONDER, "answered by 'x/b', expected 'ghost'", False, False),
        (Outcome.ALLOWED, "", False, False),
        (Outcome.REFUSED, "connection refused", False, False),
    ],
)
def test_what_is_tried_again_before_it_is_a_verdict(outcome: Outcome, detail: str, drop_seen: bool, again: bool) -> None:
    assert needs_another_try(ProbeResult(outcome, detail, "", 0.0), drop_seen) is again


def run_one(job: Job) -> tuple[Exited, float]:
    started = time.monotonic()
    with ProcessPool(1) as pool:
        pool.submit(job)
        while True:
            events, _ = pool.poll(10.0)
            for event in events:
                if isinstance(event, Exited):
                    return event, time.monotonic() - started


@needs_root
def test_a_limit_counts_the_time_a_process_ran_not_the_time_it_waited_for_a_cpu(
    monkeypatch: pytest.MonkeyPatch, deployed_netns: str
) -> None:
    job = Job(deployed_netns, ("sleep", "5"), None, 0.3)
    killed, took = run_one(job)
    assert killed.result.returncode is None and 0.25 < took < 2
    # The same process, said to have waited 0.5 s for a CPU: it gets that time on top.
    monkeypatch.setattr(runner, "cpu_wait", lambda pid: 0.5)
    killed, took = run_one(job)
    assert killed.result.returncode is None and 0.75 < took < 2.5


def test_cpu_wait_reads_the_schedulers_account() -> None:
    # A process that has run has spent some time on the run queue, however little.
    assert runner.cpu_wait(1) >= 0.0 and runner.cpu_wait(2**22 + 7) == 0.0


@pytest.fixture
def deployed_netns() -> Iterator[str]:
    backend = StepDriver(emulated.create(Options(probe_workers=8)))
    try:
        backend.deploy(SMALL)
        yield backend.network.netns["x/a"]
    finally:
        backend.close()


SMALL = Topology(
    namespaces=(NamespaceSpec("x"),),
    pods=(PodSpec("x", "a", {}, (PortSpec(80),)), PodSpec("x", "b", {}, (PortSpec(80), PortSpec(7000, Protocol.UDP)))),
)

#: Answers only the second datagram it receives: a probe that gets no answer the
#: first time is tried again before "blocked" becomes its verdict.
SECOND_TIME = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 7001)); print('ready', flush=True)\n"
    "s.recvfrom(64); data, peer = s.recvfrom(64); s.sendto(b'x/b', peer)"
)


@needs_root
def test_a_probe_without_an_answer_is_tried_again_before_it_is_a_verdict() -> None:
    import subprocess

    backend = StepDriver(emulated.create(Options(probe_workers=8)))
    try:
        backend.deploy(SMALL)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", backend.network.netns["x/b"], sys.executable, "-c", SECOND_TIME],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
            probe = Probe(SMALL.pod("x/a"), SMALL.pod("x/b"), PortProtocol(7001, Protocol.UDP))
            observed = backend.probe([probe], 1.0)[probe]
            assert (observed.outcome, observed.detail) == (
                Outcome.ALLOWED,
                "egress of x/a not isolated; ingress of x/b not isolated",
            )
            assert listener.wait(timeout=10) == 0
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
    finally:
        backend.close()
