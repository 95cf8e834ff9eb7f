"""Closing live emulated backends when the process ends, however it ends.

* normal exit and an unhandled exception (including ``KeyboardInterrupt`` from
  Ctrl-C, which Python raises by default): an ``atexit`` hook;
* SIGTERM and SIGHUP, whose default action would end the process without running
  ``atexit``: a handler that closes the backends, then does what the previous
  handler would have done (calls it, or re-raises the signal with the default
  action), so it composes with handlers that pytest or the caller installed;
* SIGINT only when its handler is the default action (a process started with
  Ctrl-C reset); Python's own handler already raises ``KeyboardInterrupt``.

SIGKILL cannot be caught: the next run's ``cleanup_leftovers`` handles it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)


class Closeable(Protocol):
    def close(self) -> None: ...


#: Open backends, held strongly: one dropped without close() is still closed at exit.
_live: set[Closeable] = set()
_lock = threading.RLock()
_installed = False


def register(backend: Closeable) -> None:
    with _lock:
        _live.add(backend)
    _install_once()


def unregister(backend: Closeable) -> None:
    with _lock:
        _live.discard(backend)


def close_all() -> None:
    with _lock:
        backends = list(_live)
    for backend in backends:
        try:
            backend.close()
        except Exception:  # one failure must not keep the others alive
            log.exception("closing an emulated backend failed")


def _install_once() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    atexit.register(close_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        previous = signal.getsignal(signum)
        if signum == signal.SIGINT and previous is not signal.SIG_DFL:
            continue
        if previous is signal.SIG_IGN:
            continue
        signal.signal(signum, _chained(previous))


def _chained(previous: object) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        close_all()
        if callable(previous):
            previous(signum, frame)
            return
        # The default action: end the process the way the signal would have.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return handler
