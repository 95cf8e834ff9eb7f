"""The environment check's script, run for real with dash and busybox sh on this
machine (whose kernel has no SCTP), and its report read back."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.kube.environment import ProbeEnvironment, environment_command, parse_environment

FALSE = shutil.which("false") or "/bin/false"


def run_check(shell: str, tmp_path: Path, **env: str) -> ProbeEnvironment:
    command = environment_command()
    result = subprocess.run(
        [shell, "-c", command[2]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NPH_AGNHOST": FALSE, "TMPDIR": str(tmp_path), **env},
    )
    assert result.returncode == 0, result.stderr
    return parse_environment(result.stdout)


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_this_machine_has_the_clients_and_no_sctp(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    sh = [shutil.which("dash") or "dash"] if shell == "dash" else []
    if shell == "busybox":
        (tmp_path / "sh").symlink_to(shutil.which("busybox") or "busybox")
        sh = [str(tmp_path / "sh")]
    if any(shutil.which(tool) is None for tool in ("curl", "nc")):
        pytest.skip("needs curl and nc")
    found = run_check(sh[0], tmp_path)
    assert found == ProbeEnvironment(sctp=False, missing=())
    assert list(tmp_path.glob("nph.*")) == []


def test_missing_tools_and_scratch_space_are_named(tmp_path: Path) -> None:
    found = run_check(
        shutil.which("dash") or "sh", tmp_path / "missing", NPH_AGNHOST="/nonexistent/agnhost", PATH="/nonexistent:/bin:/usr/bin"
    )
    assert "/nonexistent/agnhost" in found.missing
    assert f"a writable {tmp_path / 'missing'}" in found.missing


def test_reports_are_read_line_by_line() -> None:
    assert parse_environment("noise\nNPH-ENV sctp yes\n") == ProbeEnvironment(sctp=True)
    assert parse_environment("NPH-ENV missing curl\nNPH-ENV sctp no\n") == ProbeEnvironment(False, ("curl",))
    # Without the check's SCTP line, SCTP counts as absent.
    assert parse_environment("") == ProbeEnvironment(sctp=False)
