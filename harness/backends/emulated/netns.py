"""Entering a run's network namespaces from a thread of the harness.

``setns(2)`` with ``CLONE_NEWNET`` switches only the calling thread, so a short-lived
thread can enter a namespace, open a socket or start a process there (both keep
that namespace for life) and end, while every other thread of the harness stays
where it was.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from harness.backends.emulated.names import NETNS_DIR

_CLONE_NEWNET = 0x40000000
_libc: ctypes.CDLL | None = None

T = TypeVar("T")


def libc() -> ctypes.CDLL:
    """The C library (loaded once: a process that forks loads it before, so that
    its children need not)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (an ``ip netns``
    name). Raises OSError when it does not exist or cannot be entered."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc().setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


def call_in_netns(name: str, function: Callable[[], T]) -> T:
    """``function()`` run by a thread inside network namespace ``name``; its result,
    or the exception it (or entering the namespace) raised."""
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            enter_netns(name)
            result.append(function())
        except BaseException as err:  # handed to the caller
            failure.append(err)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
