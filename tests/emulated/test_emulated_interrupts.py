"""Ctrl-C, pressed again and again, never leaves an emulated network behind: a real
pytest run on the emulated backend, sent SIGINT as a terminal sends it (to the
whole foreground process group) once while it probes and three more times while it
tears its network down. Needs root and the emulated backend's tools."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import harness
from harness.backends.emulated import missing_requirements
from harness.backends.emulated.system import existing_netns, process_status

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

REPO = Path(harness.__file__).resolve().parent.parent

#: Eighty pods: probing and removing the network take long enough for the key
#: presses to land in them.
PODS = [f"p{i}" for i in range(80)]
SLOW = textwrap.dedent("""\
    description: eighty pods, every cell blocked
    namespaces:
      x:
        pods: {POD}
    policies:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny, namespace: x}
        spec: {podSelector: {}, policyTypes: [Ingress]}
    expect: {default: blocked}
""").replace("{POD}", "{" + ", ".join(f"{pod}: {{ports: [80/TCP, 81/TCP]}}" for pod in PODS) + "}")


def run_prefix(pid: int) -> str:
    return f"nph-{pid}-"


def probes_running(session: int) -> bool:
    """Whether a curl of the run (of its session: the probes are not given their own)
    is running."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = process_status(int(entry.name))
        try:
            command = (entry / "comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile
        if command == "curl" and fields is not None and int(fields[3]) == session:
            return True
    return False


def test_repeated_ctrl_c_during_teardown_still_removes_everything(tmp_path: Path) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "slow.yaml", "--backend", "emulated"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,  # its own process group, as a shell's foreground job
    )
    prefix = run_prefix(process.pid)

    def namespaces() -> int:
        return sum(1 for name in existing_netns() if name.startswith(prefix))

    try:
        deadline = time.monotonic() + 120
        while namespaces() < len(PODS) + 1:  # the pods' and the node's
            assert process.poll() is None and time.monotonic() < deadline, "the network never came up"
            time.sleep(0.02)
        # Blocked cells end as soon as the kernel logs their drop, so the round is
        # short: press as soon as its first curl runs, not after a guessed delay.
        while not probes_running(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, "the probe round never started"
            time.sleep(0.005)
        # The first press stops the probing; the run unwinds to its teardown (servers
        # stopped, then every namespace deleted: most of a second for eighty pods).
        # Then a press every 20 ms until the process has ended, as an impatient user
        # does: some land in pytest's own unwinding, others in the teardown.
        os.killpg(process.pid, signal.SIGINT)
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            try:
                os.killpg(process.pid, signal.SIGINT)
            except ProcessLookupError:
                break
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # pytest reports the interruption (exit status 2), or, when a later press lands
    # in its own reporting, Python ends by SIGINT (-2): either way, nothing is left.
    assert process.returncode in (pytest.ExitCode.INTERRUPTED, -signal.SIGINT), out
    assert [n for n in existing_netns() if n.startswith(prefix)] == [], out
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert prefix.rstrip("-") not in tables
    # Presses that came during the teardown were held, and the user was told so.
    assert "is held until it is done, so that nothing is left behind" in out
