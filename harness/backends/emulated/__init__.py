"""``--backend emulated``: every pod a Linux network namespace, policies enforced by
nftables in a node namespace, probes made with real curl and netcat.

Light at import time (the option hook imports every backend module, and each
endpoint server process imports this package): the implementation is imported
by :func:`create`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.backends.emulated.notes import CLEANUP_COMMAND, NETWORK_GONE_NOTE, kept_notice
from harness.core.errors import BackendUnavailable

if TYPE_CHECKING:
    from harness.backends.base import OptionSource
    from harness.backends.emulated.backend import EmulatedBackend

#: Tools the backend runs, and the Debian package of each.
REQUIRED_TOOLS = {"ip": "iproute2", "nft": "nftables", "nc": "netcat-openbsd", "curl": "curl"}


def probe_workers(text: str) -> int:
    """``--probe-workers`` as a whole number of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (probes run at once), got {text!r}")
    return value


def add_options(group: Any) -> None:
    """Register ``--probe-workers`` and ``--keep-network`` (the other settings come
    from the scenario)."""
    group.addoption(
        "--probe-workers",
        dest="probe_workers",
        metavar="N",
        type=probe_workers,
        default=None,
        help="emulated backend: how many probe processes run at once "
        "(default 32 per CPU, at most a quarter of the open-file limit)",
    )
    group.addoption(
        "--keep-network",
        dest="keep_network",
        action="store_true",
        default=False,
        help="emulated backend: keep each scenario's network and servers after the session, so that the "
        "reproduce commands still run; remove them with `python -m harness cleanup`",
    )


#: Capabilities the backend needs (linux/capability.h): namespaces and nftables.
_CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}


def missing_capabilities(status: str | None = None) -> list[str]:
    """The capabilities this process lacks of :data:`_CAPABILITIES`, from the
    effective set in ``/proc/self/status`` (``status``: that file's text)."""
    if status is None:
        try:
            with open("/proc/self/status") as source:
                status = source.read()
        except OSError:
            return []  # no procfs to tell: creating the namespaces will say
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return [name for name, bit in _CAPABILITIES.items() if not effective >> bit & 1]
    return []


def missing_requirements() -> list[str]:
    """What this machine lacks to run the emulated backend, as instructions."""
    if not sys.platform.startswith("linux"):
        return [f"Linux (network namespaces and nftables); this is {sys.platform}"]
    needs = []
    if os.geteuid() != 0:
        needs.append("run as root (e.g. sudo) to create network namespaces and nftables rules")
    else:
        lacking = missing_capabilities()
        if lacking:
            needs.append(
                f"the capabilities {' and '.join(lacking)} (this process runs as root without them; in a container "
                "add them, e.g. docker run --cap-add NET_ADMIN --cap-add SYS_ADMIN)"
            )
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    nc = shutil.which("nc")
    if nc is not None and "netcat-openbsd" not in missing and not _is_openbsd_netcat(nc):
        # busybox and traditional netcat lack -W and report dropped UDP as open.
        missing.append("netcat-openbsd")
    if os.geteuid() == 0 and "nftables" not in missing:
        from harness.backends.emulated.nftlib import available

        if available() is not None:
            missing.append("libnftables1")  # the library behind nft, which loads the rulesets
    if missing:
        needs.append("apt-get install " + " ".join(sorted(missing)))
    return needs


def _is_openbsd_netcat(path: str) -> bool:
    try:
        done = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "OpenBSD netcat" in done.stdout + done.stderr


def cleanup_leftovers() -> list[str]:
    """Remove what emulated runs whose owner process died left behind (namespaces,
    their processes, records under /run/netpol-harness), except networks kept
    with ``--keep-network``. Returns the namespace names removed."""
    from harness.backends.emulated.leftovers import cleanup_leftovers as cleanup

    return cleanup()


def cleanup() -> list[str]:
    """``python -m harness cleanup``: remove the networks kept with
    ``--keep-network`` by sessions that have ended, their servers, and whatever
    dead runs left behind. Returns the namespace names removed. Needs root."""
    from harness.backends.emulated.leftovers import remove_kept_networks

    return remove_kept_networks()


def create(options: OptionSource, progress: Callable[[str], None] | None = None) -> EmulatedBackend:
    """The backend, after checking this machine can run it and removing leftovers
    of dead runs. Its probe workers are capped at a quarter of the open-file
    limit, whose soft value is raised to the hard one first. Nothing here takes
    long enough to report ``progress``."""
    needs = missing_requirements()
    if needs:
        raise BackendUnavailable("the emulated backend needs: " + "; ".join(needs))
    from harness.backends.emulated.backend import EmulatedBackend

    cleanup_leftovers()
    workers = options.getoption("probe_workers", None)
    return EmulatedBackend(
        probe_workers=None if workers is None else int(workers),
        keep_network=bool(options.getoption("keep_network", False)),
        progress=progress,
    )


__all__ = [
    "CLEANUP_COMMAND",
    "NETWORK_GONE_NOTE",
    "add_options",
    "cleanup",
    "cleanup_leftovers",
    "create",
    "kept_notice",
    "missing_capabilities",
    "missing_requirements",
    "probe_workers",
]
