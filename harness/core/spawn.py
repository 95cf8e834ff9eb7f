"""Starting a command in its own session, out of reach of the terminal's Ctrl-C.

The commands a backend runs to build and remove what it made (``ip``, ``nft``,
``kind``, ``kubectl``) and the emulated backend's server launcher are started in a
session of their own, so that SIGINT and SIGTERM sent to the harness's process
group (a Ctrl-C, a CI runner cancelling the job) reach only the harness, which
decides what to stop (harness.backends.shield). A child only leaves the group when
it calls setsid(2), after the fork: a signal sent to the group in between reached
it, and, its handlers reset to the default action before the exec, ended it at once
(an ``ip netns del`` of a teardown killed by the second of two quick presses). So
the two signals are blocked in the calling thread while the child is started: the
child inherits the blocked mask, a signal that came in that window stays pending
in it, never delivered, and the caller gets its own once the mask is restored.
The child runs with both blocked: the harness ends it, when it must, with SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

#: What a terminal or a CI runner sends to a whole process group.
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextmanager
def group_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in the calling thread for the block; any that arrive
    are delivered when it ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def popen_own_session(argv: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, start_new_session=True, **options)``, started with
    SIGINT and SIGTERM blocked so that none sent to the harness's group reaches it."""
    with group_signals_blocked():
        return subprocess.Popen(list(argv), start_new_session=True, **options)


def run_own_session(argv: Sequence[str], timeout: float, input: str | None = None, **options: Any) -> tuple[int, str, str]:
    """Run ``argv`` to completion in its own session (see :func:`popen_own_session`),
    as text: its exit status, stdout and stderr. One that overruns ``timeout`` is
    killed (SIGKILL) and reaped, then :class:`subprocess.TimeoutExpired` is raised,
    as :func:`subprocess.run` does; so is one whose caller is interrupted."""
    stdin = subprocess.PIPE if input is not None else options.pop("stdin", subprocess.DEVNULL)
    with popen_own_session(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options) as child:
        try:
            out, err = child.communicate(input, timeout=timeout)
        except BaseException:
            child.kill()
            child.wait()
            raise
    return child.returncode, out, err
