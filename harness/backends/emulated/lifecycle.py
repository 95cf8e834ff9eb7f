"""Closing live emulated backends when the process ends, however it ends.

* normal exit and an unhandled exception (including ``KeyboardInterrupt`` from
  Ctrl-C, which Python raises by default): an ``atexit`` hook;
* SIGTERM, SIGHUP, and SIGINT when Ctrl-C was reset to the default action: the
  default action would end the process without running ``atexit``. Only for a
  signal whose handler is still the default one (a plain script) is a handler
  installed, once per process: it closes the backends, then ends the process as
  the signal would have. A signal that already has a handler keeps it: the pytest
  plugin's turns SIGTERM into ``KeyboardInterrupt``, which unwinds to its own
  cleanup and then to the ``atexit`` hook, and a caller's own handler decides
  what the signal means.

SIGKILL cannot be caught: the next run's ``cleanup_leftovers`` handles it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
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
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _close_then_default)


def _close_then_default(signum: int, frame: FrameType | None) -> None:
    """Close the backends, then end the process the way the signal would have."""
    close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
