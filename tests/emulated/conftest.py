"""Fixtures shared by the emulated backend's tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.backends.emulated.names import RunId


def _children_running(command: str) -> list[int]:
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue  # a thread that just ended
        for pid in children:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                    pids.append(int(pid))
            except FileNotFoundError:
                pass
    return pids


@pytest.fixture
def children_running() -> Callable[[str], list[int]]:
    """Children of this process (started from any of its threads) whose command
    name is the argument: what a test expects to have been reaped."""
    return _children_running


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own (named like a run's, so that the
    harness's cleanup would recognise it), its loopback up; deleted afterwards."""
    name = f"{RunId.new()}-test"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
