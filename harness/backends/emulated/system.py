"""Running the system tools the emulated backend drives (ip, nft, sysctl), in the
host's network namespace or in one of a run's."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from harness.backends.emulated.names import NETNS_DIR
from harness.backends.emulated.netns import call_in_netns
from harness.core.errors import BackendError
from harness.core.spawn import run_own_session

#: Most commands :func:`run_all` runs at once: enough to overlap their start-up
#: on a few cores, few enough to stay far from process and file limits.
RUN_ALL_CONCURRENCY = 8

#: Children get a small, predictable environment: English messages, no proxy.
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", _DEFAULT_PATH), "LC_ALL": "C"}


def run(argv: Sequence[str], what: str, stdin: str | None = None, timeout: float = 60.0, netns: str | None = None) -> str:
    """Run a command to completion; its stdout, or a :class:`BackendError` naming
    ``what`` was being done, the command and its stderr. A command that overruns
    ``timeout`` is killed and reaped before the error is raised. With ``netns``, the
    command runs inside that network namespace, as ``ip netns exec NETNS`` would run
    it but without the ``ip`` process and its mount namespace (which only matter to
    commands that read /etc or /sys: not nft, not sysctl's /proc/sys/net)."""
    if netns is not None:
        try:
            return call_in_netns(netns, lambda: run(argv, what, stdin, timeout))
        except OSError as err:
            raise BackendError(f"{what}: cannot enter network namespace {netns}: {err.strerror or err}") from None
    try:
        # Its own session: the terminal's Ctrl-C goes to the harness, which decides
        # (harness.backends.shield), not to an `ip netns del` halfway through a teardown.
        returncode, stdout, stderr = run_own_session(argv, timeout, input=stdin, env=child_environment())
    except FileNotFoundError:
        raise BackendError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what}: `{shlex.join(argv)}` did not finish within {timeout:g}s") from None
    except OSError as err:
        # Out of processes or file descriptors, for instance.
        raise BackendError(f"{what}: cannot run `{shlex.join(argv)}`: {err.strerror or err}") from None
    if returncode != 0:
        detail = stderr.strip() or stdout.strip() or f"exit status {returncode}"
        raise BackendError(f"{what}: `{shlex.join(argv)}` failed: {detail}")
    return stdout


def run_all(
    commands: Mapping[str, tuple[Sequence[str], str]],
    what: str,
    timeout: float = 60.0,
    netns: Mapping[str, str] | None = None,
) -> None:
    """Run ``label → (argv, stdin)``, at most :data:`RUN_ALL_CONCURRENCY` at once,
    each inside ``netns[label]`` when given (see :func:`run`), and raise one
    :class:`BackendError` naming every failure. Each command is reaped (killed
    first if it overruns ``timeout``) before this returns; on an interruption, the
    commands not yet started are not started."""
    if not commands:
        return
    failures: list[str] = []
    where = netns or {}

    def one(label: str, argv: Sequence[str], stdin: str) -> None:
        try:
            run(argv, what, stdin=stdin, timeout=timeout, netns=where.get(label))
        except BackendError as err:
            failures.append(f"{label}: {str(err).removeprefix(what + ': ')}")

    workers = min(RUN_ALL_CONCURRENCY, len(commands))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emulated-run-all")
    try:
        futures = [pool.submit(one, label, argv, stdin) for label, (argv, stdin) in commands.items()]
        for future in futures:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise BackendError(f"{what} failed: " + "; ".join(sorted(failures)))


def ip_batch(lines: Iterable[str], what: str, netns: str | None = None) -> None:
    """Run many ``ip`` commands in one process (``ip [-n NS] -batch -``)."""
    script = "".join(f"{line}\n" for line in lines)
    if not script:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, what, stdin=script)


def process_status(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, from field 3 of
    proc(5) (the state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as source:
            stat = source.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    return stat.rpartition(")")[2].split()


def existing_netns() -> list[str]:
    """Names of the network namespaces ``ip netns`` knows (read from its directory:
    cheaper than ``ip netns list`` and without its id look-ups)."""
    try:
        return sorted(entry.name for entry in os.scandir(NETNS_DIR))
    except FileNotFoundError:
        return []


def processes_in_netns(names: Iterable[str]) -> dict[str, list[int]]:
    """The processes inside each of these network namespaces, found in one pass
    over /proc (what ``ip netns pids`` does for one namespace: a process belongs to
    a namespace when its ``/proc/PID/ns/net`` is the same file as the handle)."""
    handles: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            info = os.stat(NETNS_DIR / name)
        except OSError:
            continue
        handles[(info.st_dev, info.st_ino)] = name
    found: dict[str, list[int]] = {name: [] for name in handles.values()}
    if not handles:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            info = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue  # ended meanwhile, or a kernel thread
        owner = handles.get((info.st_dev, info.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return found
