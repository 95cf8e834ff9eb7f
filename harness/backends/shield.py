"""Teardown that Ctrl-C cannot cut short.

A backend's ``close()`` removes what it created (namespaces, nftables tables,
server processes, a kind cluster). Interrupted halfway (a second Ctrl-C while the
first one's cleanup runs, or SIGTERM from a CI runner cancelling the job), it would
leave part of it behind for the next run to trip over. While a teardown runs, SIGINT
and SIGTERM are therefore held: the teardown finishes, the user is told once why
the key press waits, and the process then ends as it was already doing. The
commands a teardown runs are started in their own session, with the group's
signals blocked while they start (:mod:`harness.core.spawn`), so the terminal's
SIGINT, sent to the whole foreground process group, does not reach them either.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_held(what: str, tell: Callable[[str], None] | None = None) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM while the block runs (``what`` says what it does, for
    the one message shown when one arrives). Yields the list of signals held, for a
    caller that wants to act on them afterwards. Outside the main thread, where
    signal handlers cannot be set, the block runs unprotected."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def say(message: str) -> None:
        if tell is not None:
            tell(message)
        else:
            sys.stderr.write(f"netpol-harness: {message}\n")
        # Now: a process that more presses end before its exit would lose it.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)
        if len(held) == 1:
            say(f"{what}; {signal.Signals(signum).name} is held until it is done, so that nothing is left behind")

    previous: dict[signal.Signals, Any] = {}
    try:
        for signum in _HELD:
            previous[signum] = signal.signal(signum, hold)
        yield held
    finally:
        for signum, handler in previous.items():
            # None: a handler installed outside Python, which cannot be put back.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
