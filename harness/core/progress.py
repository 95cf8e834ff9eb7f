"""Progress messages: how long-running work (creating a cluster, probing a large
matrix) tells the user what it is doing. A callable taking one line of text."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def silent(message: str) -> None:
    """A :data:`Progress` that says nothing."""
