"""Fixtures shared by the emulated backend's tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


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
