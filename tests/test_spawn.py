"""Commands started in their own session with the group's signals blocked: real
processes, their session and signal mask read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.core.spawn import popen_own_session, run_own_session


def blocked_signals(pid: int) -> set[int]:
    """The signals ``pid`` blocks (SigBlk of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {number for number in range(1, 65) if mask & (1 << (number - 1))}
    raise AssertionError(f"no SigBlk in /proc/{pid}/status")


def test_a_child_has_its_own_session_and_ignores_the_groups_signals() -> None:
    child = popen_own_session(["sleep", "30"])
    try:
        assert os.getsid(child.pid) == child.pid != os.getsid(0)
        assert {signal.SIGINT, signal.SIGTERM} <= blocked_signals(child.pid)
        # What a Ctrl-C or a cancelled CI job would send: it stays pending, never delivered.
        os.kill(child.pid, signal.SIGINT)
        os.kill(child.pid, signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.3)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # The caller's own mask is as it was.
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_run_returns_status_and_output_and_a_late_command_is_killed() -> None:
    assert run_own_session(["sh", "-c", "cat; echo oops >&2; exit 3"], 10, input="in\n") == (3, "in\n", "oops\n")
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_own_session(["sh", "-c", "echo $$; exec sleep 30"], 0.5)
    assert time.monotonic() - began < 5
    said = info.value.stdout
    pid = int(said.decode() if isinstance(said, bytes) else str(said))
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped, not left running
