"""Ownership records of emulated runs, and removal of what dead runs left behind.

Each run writes ``/run/netpol-harness/<run>.json`` with its owner's pid, the
owner's start time (so a recycled pid is not mistaken for a live owner) and every
namespace it is about to create, before creating any. A run whose owner is gone
(killed with SIGKILL, a crashed interpreter, a power-cut CI job) is then found by
its namespace names or its record and removed by :func:`cleanup_leftovers`.

A network kept for the user (``--keep-network``) is marked ``kept`` in its record:
:func:`cleanup_leftovers` leaves it alone, and only :func:`remove_kept_networks`
(``python -m harness cleanup``) removes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from collections.abc import Iterable

from harness.backends.emulated.names import NETNS_ETC, PREFIX, STATE_DIR, RunId
from harness.backends.emulated.system import existing_netns, ip_batch, process_status, processes_in_netns
from harness.core.errors import BackendError
from harness.core.files import write_atomic

log = logging.getLogger(__name__)


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if there is no such
    process."""
    fields = process_status(pid)
    try:
        return int(fields[19]) if fields is not None else None  # field 22 of proc(5)
    except (IndexError, ValueError):
        return None


def write_state(run: RunId, namespaces: Iterable[str], kept: bool = False) -> None:
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    record = {"pid": run.pid, "start_time": process_start_time(run.pid), "namespaces": sorted(namespaces), "kept": kept}
    try:
        write_atomic(run.state_file, json.dumps(record, indent=1))
    except OSError as err:
        raise BackendError(f"cannot record the emulated run in {run.state_file}: {err.strerror or err}") from None


def read_state(run: RunId) -> dict[str, object] | None:
    try:
        data = json.loads(run.state_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_state(run: RunId) -> None:
    run.state_file.unlink(missing_ok=True)
    # What an atomic write killed halfway left beside it.
    for partial in STATE_DIR.glob(f".{run.state_file.name}.*.tmp"):
        partial.unlink(missing_ok=True)
    shutil.rmtree(run.log_dir, ignore_errors=True)


def is_kept(run: RunId) -> bool:
    state = read_state(run)
    return bool(state and state.get("kept") is True)


def owner_alive(run: RunId) -> bool:
    started = process_start_time(run.pid)
    if started is None:
        return False
    state = read_state(run)
    recorded = state.get("start_time") if state else None
    return not isinstance(recorded, int) or recorded == started


def remove_namespaces(names: Iterable[str]) -> list[str]:
    """Kill every process inside these namespaces and delete them. Returns the names
    that still exist afterwards (empty when all went)."""
    names = list(names)
    present = set(existing_netns())
    targets = [name for name in names if name in present]
    for pids in processes_in_netns(targets).values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if targets:
        # Deleting the handle is enough: a namespace (and the veths in it) goes away
        # with its last process, and the processes were just killed.
        try:
            ip_batch((f"netns del {name}" for name in targets), "deleting network namespaces")
        except BackendError as err:
            log.warning("%s", err)
    remaining = set(existing_netns())
    for name in names:
        if name not in remaining:
            remove_netns_files(name)
    return [name for name in targets if name in remaining]


def remove_netns_files(name: str) -> None:
    """Remove the /etc/netns/<name>/ directory of a run's namespace (its resolver
    files), which ``ip netns del`` leaves in place."""
    if RunId.parse(name) is None:
        return  # never anything but a run's own
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def _recorded_namespaces(run: RunId) -> list[str]:
    state = read_state(run)
    names = state.get("namespaces") if state else None
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n.startswith(PREFIX)]


def cleanup_leftovers(kept: bool = False) -> list[str]:
    """Remove namespaces, server processes and records of emulated runs whose owner
    process is dead; networks kept for the user too when ``kept``. Runs of live
    processes (another test session) are left alone. Returns the namespace names
    removed."""
    runs: dict[RunId, set[str]] = {}
    for name in existing_netns():
        run = RunId.parse(name)
        if run is not None:
            runs.setdefault(run, set()).add(name)
    if NETNS_ETC.is_dir():
        for entry in NETNS_ETC.iterdir():
            run = RunId.parse(entry.name)
            if run is not None:
                runs.setdefault(run, set()).add(entry.name)
    if STATE_DIR.is_dir():
        for entry in STATE_DIR.iterdir():
            run = RunId.parse(entry.name.lstrip("."))  # a leading dot: a partial record
            if run is not None:
                runs.setdefault(run, set()).update(_recorded_namespaces(run))
    present = set(existing_netns())
    removed: list[str] = []
    for run, names in sorted(runs.items(), key=lambda item: item[0].name):
        if owner_alive(run) or (is_kept(run) and not kept):
            continue
        remaining = remove_namespaces(sorted(names))
        if remaining:
            log.warning("could not remove leftover network namespaces %s", ", ".join(remaining))
            continue
        remove_state(run)
        removed.extend(sorted(names & present))
    if removed:
        log.info("removed %d leftover namespace(s) of dead emulated runs", len(removed))
    return removed


def kept_networks() -> list[RunId]:
    """The networks kept for the user (by any session), oldest record first."""
    if not STATE_DIR.is_dir():
        return []
    runs = [RunId.parse(entry.name) for entry in STATE_DIR.glob("*.json")]
    found = [run for run in runs if run is not None and is_kept(run)]
    return sorted(found, key=lambda run: run.state_file.stat().st_mtime if run.state_file.exists() else 0.0)


def remove_kept_networks() -> list[str]:
    """Remove every network kept for the user whose session has ended, with its
    servers, and what dead runs left behind (``python -m harness cleanup``).
    Returns the namespace names removed."""
    return cleanup_leftovers(kept=True)
