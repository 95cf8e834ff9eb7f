"""Running many short commands, each inside a given network namespace, at once.

A round of probes is hundreds of curl and nc processes; the cost is starting them.
``ip netns exec`` per probe adds an ``ip`` process and a mount namespace to each, so
instead one short-lived thread per source namespace enters that namespace with
``setns(2)`` (which switches only the calling thread) and starts its probes from
there: children inherit the thread's network namespace, so each probe runs exactly
``ip netns exec NS <argv>`` would run, minus the wrapper. The calling thread never
changes namespace; the launcher threads end with the round.

The calling thread collects the results: it waits on a pidfd per child, so each
probe's elapsed time is measured when that process exits, and kills a process that
overruns its limit. At most ``workers`` probes run at any time. Whatever fails
while a job is being started, the job comes back as an error, never as a wait
that does not end; and the round as a whole has a deadline too.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import queue
import resource
import selectors
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.backends.emulated.names import NETNS_DIR
from harness.backends.emulated.system import child_environment

_CLONE_NEWNET = 0x40000000
#: Most output kept per stream: a probe's answer is a few bytes.
_OUTPUT_LIMIT = 64 * 1024
#: Slack of a round's deadline per wave of probes, and once per round.
_WAVE_SLACK = 2.0
_ROUND_SLACK = 30.0


@dataclass(frozen=True)
class Job:
    netns: str
    argv: tuple[str, ...]
    stdin: bytes | None
    limit: float  # seconds before the process is killed


@dataclass(frozen=True)
class Finished:
    """``returncode`` None: killed at its limit, or never started (``error`` says why)."""

    returncode: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    elapsed: float = 0.0
    error: str = ""


@dataclass
class _Running:
    index: int
    job: Job
    process: subprocess.Popen[bytes]
    pidfd: int
    started: float
    killed: bool = False
    chunks: dict[int, list[bytes]] = field(default_factory=dict)


_libc: ctypes.CDLL | None = None


def _enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


#: File descriptors the harness holds per running probe: its stdout and stderr
#: pipes and its pidfd, plus one for the pipes and the exec-error pipe that exist
#: while it is being started.
FDS_PER_PROBE = 4


def max_workers() -> int:
    """How many probes may run at once within the open-file limit. Raises this
    process's soft limit to its hard limit first (the soft limit is often 1024,
    the hard one much higher)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep the soft limit
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, soft // FDS_PER_PROBE)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def round_deadline(jobs: Sequence[Job], workers: int) -> float:
    """Seconds a whole round may take: each wave of ``workers`` probes is bounded by
    the longest probe limit, plus slack for starting processes on a busy machine.
    Only a fault in the harness itself makes a round reach it."""
    waves = math.ceil(len(jobs) / max(1, workers))
    return waves * (max((job.limit for job in jobs), default=0.0) + _WAVE_SLACK) + _ROUND_SLACK


class _Round:
    def __init__(self, jobs: Sequence[Job], workers: int, deadline: float) -> None:
        self.jobs = jobs
        self.deadline = deadline
        self.results: list[Finished | None] = [None] * len(jobs)
        # Not bounded: stopping the round releases extra slots to wake every
        # launcher waiting for one.
        self.slots = threading.Semaphore(max(1, workers))
        self.events: queue.SimpleQueue[_Running | tuple[int, Finished]] = queue.SimpleQueue()
        self.wake_read, self.wake_write = os.pipe()
        # One byte per event is only a wake-up call: a full pipe already wakes the
        # collector, so a launcher must never block on it.
        os.set_blocking(self.wake_write, False)
        self.stop = threading.Event()
        self.env = child_environment()

    # -- launcher threads (each inside one namespace) ------------------------------

    def launch(self, netns: str, indices: list[int]) -> None:
        """Start the jobs at ``indices`` from inside ``netns``. Every job either
        reaches the collector as a running process or is posted as finished with
        an error, whatever fails, so the collector never waits for a job that
        will not come."""
        try:
            _enter_netns(netns)
        except BaseException as err:
            for index in indices:
                self._post((index, Finished(None, error=f"cannot enter network namespace {netns}: {_reason(err)}")))
            return
        for index in indices:
            self.slots.acquire()
            if self.stop.is_set():
                return  # the collector has finished: what is left is "not run"
            self._start(index)

    def _start(self, index: int) -> None:
        """Start one job holding a slot; on any failure release the slot, end the
        process if it was started, and post the error."""
        job = self.jobs[index]
        process: subprocess.Popen[bytes] | None = None
        try:
            started = time.monotonic()
            process = subprocess.Popen(
                job.argv,
                stdin=subprocess.PIPE if job.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
            )
            if process.stdin is not None:
                try:
                    process.stdin.write(job.stdin or b"")
                    process.stdin.close()
                except BrokenPipeError:
                    pass
            pidfd = os.pidfd_open(process.pid)
        except BaseException as err:
            if process is not None:
                _end(process)
            self.slots.release()
            self._post((index, Finished(None, error=f"cannot run {job.argv[0]}: {_reason(err)}")))
            return
        self._post(_Running(index, job, process, pidfd, started))

    def _post(self, event: _Running | tuple[int, Finished]) -> None:
        self.events.put(event)
        try:
            os.write(self.wake_write, b".")
        except BlockingIOError:
            pass

    # -- the collector (calling thread) ----------------------------------------------

    def collect(self) -> list[Finished]:
        selector = selectors.DefaultSelector()
        selector.register(self.wake_read, selectors.EVENT_READ, None)
        running: dict[int, _Running] = {}
        pending = len(self.jobs)
        round_ends = time.monotonic() + self.deadline
        try:
            while pending:
                now = time.monotonic()
                if now >= round_ends:
                    self._abandon(selector, running)
                    break
                deadlines = [r.started + r.job.limit for r in running.values() if not r.killed]
                timeout = max(0.0, min([*deadlines, round_ends]) - now)
                for key, _ in selector.select(timeout):
                    current = selector.get_map().get(key.fd)
                    if current is None or current.data is not key.data:
                        continue  # closed earlier in this batch (its process finished)
                    if key.data is None:
                        os.read(self.wake_read, 4096)
                        pending -= self._drain_events(selector, running)
                        continue
                    run, fd = key.data
                    if fd == run.pidfd:
                        pending -= self._finish(selector, running, run)
                    else:
                        self._read(selector, run, fd)
                now = time.monotonic()
                for run in running.values():
                    if not run.killed and now >= run.started + run.job.limit:
                        run.process.kill()
                        run.killed = True
        finally:
            # Done, past the deadline or interrupted (Ctrl-C): stop launching and
            # end what runs.
            self.stop.set()
            for run in list(running.values()):
                self._discard(selector, run)
            selector.close()
        return [r if r is not None else Finished(None, error="not run") for r in self.results]

    def _abandon(self, selector: selectors.BaseSelector, running: dict[int, _Running]) -> None:
        """The round overran its deadline: end what runs and fail every job without
        a result."""
        why = f"the probe round did not finish within {self.deadline:g}s"
        for run in list(running.values()):
            self._discard(selector, run)
            del running[run.index]
        for index, result in enumerate(self.results):
            if result is None:
                self.results[index] = Finished(None, error=why)

    def wake_launchers(self, count: int) -> None:
        """After :meth:`collect`: give ``count`` extra slots so that every launcher
        waiting for one wakes, sees ``stop`` and returns."""
        self.stop.set()
        self.slots.release(count)

    def close(self) -> None:
        """After the launcher threads ended: end processes that were started but not
        collected (after an interruption or the deadline) and release the wake-up
        pipe."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, _Running):
                self._discard(None, event)
        os.close(self.wake_read)
        os.close(self.wake_write)

    def _drain_events(self, selector: selectors.BaseSelector, running: dict[int, _Running]) -> int:
        done = 0
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return done
            if isinstance(event, tuple):
                index, finished = event
                self.results[index] = finished
                done += 1
                continue
            running[event.index] = event
            selector.register(event.pidfd, selectors.EVENT_READ, (event, event.pidfd))
            for stream in (event.process.stdout, event.process.stderr):
                assert stream is not None
                os.set_blocking(stream.fileno(), False)
                event.chunks[stream.fileno()] = []
                selector.register(stream.fileno(), selectors.EVENT_READ, (event, stream.fileno()))

    def _read(self, selector: selectors.BaseSelector, run: _Running, fd: int) -> bool:
        """Read what ``fd`` has; False when nothing more is there now (end of file
        or, for a non-blocking pipe, nothing written yet)."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            selector.unregister(fd)
            return False
        kept = run.chunks[fd]
        if sum(len(c) for c in kept) < _OUTPUT_LIMIT:
            kept.append(data)
        return True

    def _finish(self, selector: selectors.BaseSelector, running: dict[int, _Running], run: _Running) -> int:
        elapsed = time.monotonic() - run.started
        returncode = run.process.wait()
        # The process has exited: what it wrote is in the pipes.
        for fd in list(run.chunks):
            while fd in selector.get_map() and self._read(selector, run, fd):
                pass
        assert run.process.stdout is not None and run.process.stderr is not None
        stdout = b"".join(run.chunks[run.process.stdout.fileno()])
        stderr = b"".join(run.chunks[run.process.stderr.fileno()])
        self._close(selector, run)
        del running[run.index]
        self.results[run.index] = Finished(None if run.killed else returncode, stdout, stderr, elapsed)
        return 1

    def _close(self, selector: selectors.BaseSelector | None, run: _Running) -> None:
        if selector is not None:
            for fd in [run.pidfd, *run.chunks]:
                if fd in selector.get_map():
                    selector.unregister(fd)
        os.close(run.pidfd)
        for stream in (run.process.stdout, run.process.stderr):
            if stream is not None:
                stream.close()
        self.slots.release()

    def _discard(self, selector: selectors.BaseSelector | None, run: _Running) -> None:
        _end(run.process)
        self._close(selector, run)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs, reap it and close its pipes."""
    try:
        process.kill()
    except OSError as err:
        if err.errno != errno.ESRCH:
            raise
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass  # input that could not be flushed: the process is gone anyway


def run_jobs(jobs: Sequence[Job], workers: int, deadline: float | None = None) -> list[Finished]:
    """Run ``jobs`` (at most ``workers`` at once) and return their results in order.
    The whole round is bounded by ``deadline`` seconds (default
    :func:`round_deadline`); jobs without a result by then are errors."""
    if not jobs:
        return []
    round_ = _Round(jobs, workers, round_deadline(jobs, workers) if deadline is None else deadline)
    by_netns: dict[str, list[int]] = {}
    for index, job in enumerate(jobs):
        by_netns.setdefault(job.netns, []).append(index)
    threads = [
        threading.Thread(target=round_.launch, args=(netns, indices), name=f"probe-launcher-{netns}", daemon=True)
        for netns, indices in by_netns.items()
    ]
    try:
        for thread in threads:
            thread.start()
        return round_.collect()
    finally:
        round_.wake_launchers(len(threads))
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
        round_.close()
