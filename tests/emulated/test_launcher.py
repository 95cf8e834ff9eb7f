"""The server launcher, driven through its own protocol: real forked servers in a
real network namespace, stopped, killed at their deadline and reaped.

Each test creates one namespace of its own (named like a run's, so that
``python -m harness cleanup`` would also recognise it) and removes it afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.backends.emulated import missing_requirements
from harness.backends.emulated.netns import call_in_netns
from harness.backends.emulated.servers import ServerLauncher
from harness.backends.emulated.system import process_status

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]


@pytest.fixture
def launcher() -> Iterator[ServerLauncher]:
    launcher = ServerLauncher()
    try:
        yield launcher
    finally:
        launcher.close()


def start(launcher: ServerLauncher, netns: str, log: Path, port: int) -> str:
    key = launcher.new_key()
    launcher.send(
        {
            "op": "start",
            "key": key,
            "netns": netns,
            "identity": f"x/{key}",
            "tcp": [port],
            "udp": [],
            "dns": None,
            "detached": False,
            "log": str(log),
        }
    )
    assert launcher.wait(lambda: key in launcher.ready, 20.0), launcher.failed
    return key


def hang(pid: int) -> None:
    """Stop ``pid`` (SIGSTOP) and wait until it is stopped: a signal sent before
    then could be taken first (pending signals go lowest number first, and SIGTERM
    is below SIGSTOP)."""
    os.kill(pid, signal.SIGSTOP)

    def state() -> str:
        fields = process_status(pid)
        return fields[0] if fields else "gone"

    Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.01), retry=retry_if_result(lambda s: s != "T"), reraise=True)(state)
    assert state() == "T"


def answer(netns: str, port: int) -> bytes:
    def fetch() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return conn.recv(4096)

    return call_in_netns(netns, fetch)


def test_a_started_server_answers_with_its_identity_inside_its_namespace(
    launcher: ServerLauncher, netns: str, tmp_path: Path
) -> None:
    key = start(launcher, netns, tmp_path / "a.log", 8080)
    reply = answer(netns, 8080)
    assert reply.startswith(b"HTTP/1.") and reply.rstrip().endswith(f"x/{key}".encode())


def test_a_server_that_ignores_sigterm_is_killed_at_its_deadline_and_reported_stopped(
    launcher: ServerLauncher, netns: str, tmp_path: Path
) -> None:
    key = start(launcher, netns, tmp_path / "a.log", 8080)
    hang(launcher.pids[key])  # a hung server: SIGTERM stays pending
    began = time.monotonic()
    launcher.send({"op": "stop", "keys": [key], "grace": 0.5})
    assert launcher.wait(lambda: key in launcher.status, 5.0)
    took = time.monotonic() - began
    assert launcher.status[key] == -signal.SIGKILL
    assert 0.4 < took < 3.0


def test_a_server_that_ends_on_its_own_is_reported_exited_and_the_others_keep_serving(
    launcher: ServerLauncher, netns: str, tmp_path: Path
) -> None:
    first = start(launcher, netns, tmp_path / "a.log", 8080)
    second = start(launcher, netns, tmp_path / "b.log", 8081)
    os.kill(launcher.pids[first], signal.SIGKILL)
    assert launcher.wait(lambda: first in launcher.status, 5.0)
    assert launcher.status[first] == -signal.SIGKILL and second not in launcher.status
    assert f"x/{second}".encode() in answer(netns, 8081)


def test_closing_the_launcher_stops_every_server_it_started(launcher: ServerLauncher, netns: str, tmp_path: Path) -> None:
    keys = [start(launcher, netns, tmp_path / f"{port}.log", port) for port in (8080, 8081)]
    pids = [launcher.pids[key] for key in keys]
    hang(pids[0])  # one of them hung: still gone once close returns
    launcher.close()
    # The launcher reaps every server before it exits, so none is left, not even a zombie.
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []


def test_a_server_that_cannot_bind_its_port_is_reported_failed_by_port(
    launcher: ServerLauncher, netns: str, tmp_path: Path
) -> None:
    first = start(launcher, netns, tmp_path / "a.log", 8080)
    key = launcher.new_key()
    request = {"op": "start", "key": key, "netns": netns, "identity": "x/b", "tcp": [8080], "udp": [], "dns": None}
    launcher.send({**request, "detached": False, "log": str(tmp_path / "b.log")})
    assert launcher.wait(lambda: key in launcher.status, 10.0)
    assert (launcher.failed[key], launcher.status[key]) == (
        "cannot serve x/b: [Errno 98] cannot bind 8080/TCP: Address already in use",
        1,
    )
    assert key not in launcher.ready and f"x/{first}".encode() in answer(netns, 8080)
