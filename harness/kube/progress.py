"""Progress reporting for steps that take longer than a few seconds.

A backend reports through a :data:`harness.engine.pipeline.Progress` callback (the plugin
prints it on the terminal) and through ``logging``: :func:`reporter` does both.
:func:`heartbeat` repeats a message while a blocking call (``kind create
cluster``) runs, so a long step never looks hung.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness.core.progress import Progress

__all__ = ["Progress", "heartbeat", "reporter"]

log = logging.getLogger("harness.kube")


def reporter(callback: Progress | None) -> Progress:
    """A callback that logs every message and passes it on to ``callback``."""

    def report(message: str) -> None:
        log.info(message)
        if callback is not None:
            callback(message)

    return report


@contextmanager
def heartbeat(progress: Progress, message: str, interval: float = 15.0) -> Iterator[None]:
    """Report ``message`` now and every ``interval`` seconds (with the time spent)
    until the block ends."""
    started = time.monotonic()
    done = threading.Event()
    progress(message)

    def beat() -> None:
        # Event.wait is the bounded pause: it returns at once when the block ends.
        while not done.wait(interval):
            progress(f"{message} ({time.monotonic() - started:.0f}s)")

    thread = threading.Thread(target=beat, name="netpol-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
