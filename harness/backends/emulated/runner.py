"""Running many short commands, each inside a given network namespace, at once.

``ip netns exec`` per command would add an ``ip`` process and a mount namespace to
each, so instead one launcher thread per network namespace enters it with
``setns(2)`` (which switches only that thread) and starts that namespace's
commands from there: children inherit the thread's network namespace, so each
runs exactly as ``ip netns exec NS <argv>`` would, minus the wrapper. The calling
thread never changes namespace; the launcher threads end with the pool.

The calling thread drives the pool (:meth:`ProcessPool.poll`): it hands jobs to the
launchers while fewer than ``workers`` run, waits on a pidfd per process so each
one's elapsed time is measured when it exits, delivers standard error as it
arrives when a job asks for it, ends a process on request, and kills one that
overruns its limit. A limit counts the time a process has run or slept, not the
time it waited for a CPU (``/proc/PID/schedstat``): on a loaded machine a probe is
not killed for the machine's slowness. Whatever fails while a job is being
started, it comes back as finished with an error, never as a wait that does not
end.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import math
import os
import queue
import resource
import selectors
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.backends.emulated.netns import enter_netns
from harness.backends.emulated.system import child_environment

#: Most output kept per stream of a process: a probe's answer is a few bytes.
_OUTPUT_LIMIT = 64 * 1024
#: Slack of a round's deadline per wave of jobs, and once per round.
_WAVE_SLACK = 2.0
_ROUND_SLACK = 30.0
#: File descriptors the harness holds per running process: its stdout and stderr
#: pipes and its pidfd, plus one for the pipes and the exec-error pipe that exist
#: while it is being started.
FDS_PER_PROBE = 4


@dataclass(frozen=True)
class Job:
    netns: str
    argv: tuple[str, ...]
    stdin: bytes | None
    #: Seconds the process may run (waiting for a CPU not counted) before it is killed.
    limit: float
    #: Deliver standard error as it arrives (:class:`Output`) instead of at the end.
    stream_stderr: bool = False


@dataclass(frozen=True)
class Finished:
    """``returncode`` None: killed (at its limit, or ended on request: ``ended``),
    or never started (``error`` says why)."""

    returncode: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    elapsed: float = 0.0
    error: str = ""
    ended: bool = False


@dataclass(frozen=True)
class Output:
    """A chunk of a streaming job's standard error."""

    job: int
    data: bytes


@dataclass(frozen=True)
class Started:
    """A job's process started (``at``: monotonic seconds)."""

    job: int
    at: float


@dataclass(frozen=True)
class Exited:
    job: int
    result: Finished


Event = Started | Output | Exited


@dataclass
class _Running:
    job_id: int
    job: Job
    pid: int
    pidfd: int
    stdout: int  # read ends of its pipes
    stderr: int
    started: float
    deadline: float
    killed: bool = False
    ended: bool = False
    chunks: dict[int, list[bytes]] = field(default_factory=dict)
    kept: dict[int, int] = field(default_factory=dict)


def max_workers() -> int:
    """How many processes may run at once within the open-file limit. Raises this
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


def cpu_wait(pid: int) -> float:
    """Seconds process ``pid`` has spent waiting for a CPU (0 when unknown)."""
    try:
        fields = open(f"/proc/{pid}/schedstat").read().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def round_deadline(jobs: Sequence[Job], workers: int) -> float:
    """Seconds a whole batch of jobs may take: each wave of ``workers`` jobs is
    bounded by the longest limit, plus slack for starting processes on a busy
    machine. Only a fault in the harness itself makes a round reach it."""
    waves = math.ceil(len(jobs) / max(1, workers))
    return waves * (max((job.limit for job in jobs), default=0.0) + _WAVE_SLACK) + _ROUND_SLACK


class _Launcher:
    """A thread inside one network namespace that starts the jobs handed to it."""

    def __init__(self, pool: ProcessPool, netns: str) -> None:
        self.pool = pool
        self.netns = netns
        self.jobs: queue.SimpleQueue[tuple[int, Job] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, name=f"probe-launcher-{netns}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            enter_netns(self.netns)
        except BaseException as err:
            why = f"cannot enter network namespace {self.netns}: {_reason(err)}"
            while (item := self.jobs.get()) is not None:
                self.pool._post((item[0], Finished(None, error=why)))
            return
        while (item := self.jobs.get()) is not None:
            self.pool._start(*item)


class ProcessPool:
    """Processes started in network namespaces, at most ``workers`` at once."""

    def __init__(self, workers: int, watch: Sequence[int] = ()) -> None:
        self.workers = max(1, workers)
        self.env = child_environment()
        #: Command name → its path on the children's PATH, looked up once: spawning by
        #: name would try every PATH entry again for each of thousands of probes.
        self._programs: dict[str, str] = {}
        self._jobs: dict[int, Job] = {}
        self._waiting: collections.deque[int] = collections.deque()
        self._starting = 0
        self._running: dict[int, _Running] = {}
        self._launchers: dict[str, _Launcher] = {}
        self._events: queue.SimpleQueue[_Running | tuple[int, Finished]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        # One byte per event is only a wake-up call: a full pipe already wakes the
        # poller, so a launcher must never block on it.
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        #: File descriptors of the caller's to report as readable (log sockets).
        for fd in watch:
            self._selector.register(fd, selectors.EVENT_READ, ("watch", fd))
        self._closed = False
        self._end_requested: set[int] = set()
        #: Events made by the calling thread itself, delivered by the next poll.
        self._own_events: list[Event] = []

    # -- the calling thread ----------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue ``job``; it starts as soon as fewer than ``workers`` run. Returns its id."""
        job_id = len(self._jobs)
        self._jobs[job_id] = job
        self._waiting.append(job_id)
        self._dispatch()
        return job_id

    @property
    def busy(self) -> bool:
        """Something is queued, being started or running."""
        return bool(self._waiting or self._starting or self._running or self._own_events)

    def end(self, job_id: int) -> None:
        """Kill job ``job_id`` now (or drop it if it has not started); its
        :class:`Exited` says ``ended``."""
        run = self._running.get(job_id)
        if run is not None:
            if not run.killed:
                _kill(run.pidfd)
                run.killed = run.ended = True
            return
        if job_id in self._waiting:
            self._waiting.remove(job_id)
            self._own_events.append(Exited(job_id, Finished(None, error="ended before it started", ended=True)))
        else:
            self._end_requested.add(job_id)  # being started: ended once it runs

    def poll(self, timeout: float) -> tuple[list[Event], list[int]]:
        """Wait up to ``timeout`` seconds for something to happen; the events, and
        which watched file descriptors are readable."""
        now = time.monotonic()
        deadlines = [r.deadline for r in self._running.values() if not r.killed]
        wait = 0.0 if self._own_events else max(0.0, min([*deadlines, now + timeout]) - now)
        events, self._own_events = self._own_events, []
        ready: list[int] = []
        for key, _ in self._selector.select(wait):
            data = key.data
            if data is None:
                try:
                    os.read(self._wake_read, 4096)
                except BlockingIOError:
                    pass
                continue
            if data[0] == "watch":
                ready.append(data[1])
                continue
            run: _Running = data[0]
            stream: int = data[1]
            if self._running.get(run.job_id) is not run:
                continue  # finished earlier in this batch
            if stream == run.pidfd:
                events += self._finish(run)
            else:
                events += self._read(run, stream)
        events += self._take_started()
        self._enforce_limits()
        self._dispatch()
        return events, ready

    def close(self) -> None:
        """End every process, stop the launchers and release the pool's files."""
        if self._closed:
            return
        self._closed = True
        self._waiting.clear()
        for launcher in self._launchers.values():
            launcher.jobs.put(None)
        for launcher in self._launchers.values():
            launcher.thread.join()
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, _Running):
                self._running[event.job_id] = event
        for run in list(self._running.values()):
            _kill(run.pidfd)
            _reap(run.pid)
            self._release(run, unregister=False)
        self._running.clear()
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (calling thread) -----------------------------------------------------

    def _dispatch(self) -> None:
        while self._waiting and self._starting + len(self._running) < self.workers:
            job_id = self._waiting.popleft()
            job = self._jobs[job_id]
            launcher = self._launchers.get(job.netns)
            if launcher is None:
                launcher = self._launchers[job.netns] = _Launcher(self, job.netns)
            self._starting += 1
            launcher.jobs.put((job_id, job))

    def _take_started(self) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return events
            if isinstance(event, tuple):
                job_id, finished = event
                self._starting -= 1
                self._end_requested.discard(job_id)
                events.append(Exited(job_id, finished))
                continue
            self._starting -= 1
            self._running[event.job_id] = event
            events.append(Started(event.job_id, event.started))
            self._selector.register(event.pidfd, selectors.EVENT_READ, (event, event.pidfd))
            for fd in (event.stdout, event.stderr):
                event.chunks[fd] = []
                event.kept[fd] = 0
            if event.job.stream_stderr:
                # Only a streaming job's output is read while it runs; a probe's
                # is a few bytes, which wait in the pipe until it exits.
                os.set_blocking(event.stderr, False)
                self._selector.register(event.stderr, selectors.EVENT_READ, (event, event.stderr))
            if event.job_id in self._end_requested:
                self._end_requested.discard(event.job_id)
                _kill(event.pidfd)
                event.killed = event.ended = True

    def _read(self, run: _Running, fd: int, final: bool = False) -> list[Event]:
        """Read what ``fd`` has now; a streamed chunk as an event."""
        events: list[Event] = []
        if final:
            os.set_blocking(fd, False)
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return events
            if not data:
                if fd in self._selector.get_map():
                    self._selector.unregister(fd)
                return events
            if run.job.stream_stderr and fd == run.stderr:
                events.append(Output(run.job_id, data))
            elif run.kept[fd] < _OUTPUT_LIMIT:
                run.chunks[fd].append(data)
                run.kept[fd] += len(data)

    def _finish(self, run: _Running) -> list[Event]:
        elapsed = time.monotonic() - run.started
        returncode = _reap(run.pid)
        # The process has exited: what it wrote is in the pipes.
        events: list[Event] = []
        for fd in (run.stdout, run.stderr):
            events += self._read(run, fd, final=True)
        stdout = b"".join(run.chunks[run.stdout])
        stderr = b"".join(run.chunks[run.stderr])
        self._release(run)
        del self._running[run.job_id]
        code = None if run.killed else returncode
        events.append(Exited(run.job_id, Finished(code, stdout, stderr, elapsed, ended=run.ended)))
        return events

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for run in self._running.values():
            if run.killed or now < run.deadline:
                continue
            ran = now - run.started - cpu_wait(run.pid)
            if ran < run.job.limit:
                run.deadline = now + (run.job.limit - ran)  # it waited for a CPU: not its fault
                continue
            _kill(run.pidfd)
            run.killed = True

    def _release(self, run: _Running, unregister: bool = True) -> None:
        for fd in (run.pidfd, run.stdout, run.stderr):
            if unregister and fd in self._selector.get_map():
                self._selector.unregister(fd)
            os.close(fd)

    # -- launcher threads ------------------------------------------------------------------

    def _start(self, job_id: int, job: Job) -> None:
        """Start one job (``posix_spawn``: no Python between fork and exec); on any
        failure end the process if it was started and post the error."""
        ours: list[int] = []  # the harness's ends, kept if the start succeeds
        theirs: list[int] = []  # the child's ends, closed here once it has them
        pid = 0
        try:
            out_read, out_write = os.pipe()
            ours.append(out_read)
            theirs.append(out_write)
            err_read, err_write = os.pipe()
            ours.append(err_read)
            theirs.append(err_write)
            actions: list[tuple[int, int, int]] = [
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ]
            if job.stdin is None:
                null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                theirs.append(null)
                actions.append((os.POSIX_SPAWN_DUP2, null, 0))
            else:
                # The input is a few bytes: it fits the pipe before the child runs.
                in_read, in_write = os.pipe()
                theirs += [in_read, in_write]
                os.write(in_write, job.stdin)
                actions.append((os.POSIX_SPAWN_DUP2, in_read, 0))
            started = time.monotonic()
            pid = os.posix_spawn(self._program(job.argv[0]), list(job.argv), self.env, file_actions=actions)
            pidfd = os.pidfd_open(pid)
        except BaseException as err:
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
            for fd in ours:
                os.close(fd)
            self._post((job_id, Finished(None, error=f"cannot run {job.argv[0]}: {_reason(err)}")))
            return
        finally:
            for fd in theirs:
                os.close(fd)
        self._post(_Running(job_id, job, pid, pidfd, ours[0], ours[1], started, started + job.limit))

    def _program(self, name: str) -> str:
        path = self._programs.get(name)
        if path is None:
            found = shutil.which(name, path=self.env["PATH"])
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            path = self._programs[name] = found
        return path

    def _post(self, event: _Running | tuple[int, Finished]) -> None:
        self._events.put(event)
        try:
            os.write(self._wake_write, b".")
        except (BlockingIOError, OSError):
            pass  # full (the poller wakes anyway) or closed (the pool is closing)


def _kill(pidfd: int) -> None:
    """SIGKILL through the process's pidfd: never a recycled pid."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass  # exited already, not reaped yet


def _reap(pid: int) -> int:
    """Wait for ``pid`` to end; its exit code (negative: the signal that ended it)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return -signal.SIGKILL
        return os.waitstatus_to_exitcode(status)


def run_jobs(jobs: Sequence[Job], workers: int, deadline: float | None = None) -> list[Finished]:
    """Run ``jobs`` (at most ``workers`` at once) and return their results in order.
    The whole batch is bounded by ``deadline`` seconds (default
    :func:`round_deadline`); jobs without a result by then are errors."""
    if not jobs:
        return []
    limit = round_deadline(jobs, workers) if deadline is None else deadline
    results: dict[int, Finished] = {}
    with ProcessPool(workers) as pool:
        ids = [pool.submit(job) for job in jobs]
        ends = time.monotonic() + limit
        while pool.busy:
            now = time.monotonic()
            if now >= ends:
                break
            events, _ = pool.poll(ends - now)
            for event in events:
                if isinstance(event, Exited):
                    results[event.job] = event.result
    why = f"the probe round did not finish within {limit:g}s"
    return [results.get(i, Finished(None, error=why)) for i in ids]
