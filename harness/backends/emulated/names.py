"""Names of everything one emulated run creates.

Every network namespace and nftables table starts with :data:`PREFIX` followed by a
run id that embeds the owner's process id and 32 random bits
(``nph-4242-9f3c01ab``), so that a later run can tell its own objects from those
of a crashed one and remove only the latter. Interface names (at most 15
characters) never carry the run id: they live inside the run's own namespaces and
are numbered.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.core.topology import Topology

PREFIX = "nph-"

#: Where each run records its owner and what it created (tmpfs: gone after a reboot,
#: like the namespaces themselves).
STATE_DIR = Path("/run/netpol-harness")

#: Where ``ip netns add`` keeps its namespace handles.
NETNS_DIR = Path("/run/netns")

#: Where ``ip netns exec NAME`` finds the files it mounts over /etc for that
#: namespace (ip-netns(8)): each pod's resolv.conf lives in NETNS_ETC/<netns>/.
NETNS_ETC = Path("/etc/netns")

#: The node's interface behind its default route: where packets to addresses no
#: emulated host owns go (and are answered "network unreachable").
SINK = "sink"

_RUN_NAME = re.compile(r"^nph-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{4,})(?:[-.]|$)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_TOKEN_BYTES = 4
# A netns name is a file name; keep well below NAME_MAX with room for a suffix.
_MAX_NAME = 180


@dataclass(frozen=True)
class RunId:
    """``nph-<owner pid>-<random token>`` (8 hex digits for new runs)."""

    pid: int
    token: str

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.pid}-{self.token}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def new(cls) -> RunId:
        return cls(os.getpid(), secrets.token_hex(_TOKEN_BYTES))

    @classmethod
    def parse(cls, name: str) -> RunId | None:
        """The run an object name belongs to, or None if it is not one of ours."""
        match = _RUN_NAME.match(name)
        if not match:
            return None
        return cls(int(match["pid"]), match["token"])

    @property
    def node(self) -> str:
        """The namespace that routes between endpoints and holds the filter rules."""
        return f"{self.name}-node"

    @property
    def table(self) -> str:
        """The nftables table (inside the node namespace)."""
        return self.name

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.name}.json"

    @property
    def log_dir(self) -> Path:
        return STATE_DIR / self.name


def endpoint_netns_names(run: RunId, topology: Topology) -> dict[str, str]:
    """One readable, unique namespace name per endpoint id.

    Pods become ``<run>-<namespace>.<pod>`` (a Kubernetes namespace name has no dot,
    so the first dot separates the two), external hosts ``<run>-ext.<name>``.
    """
    taken = {run.node}
    names: dict[str, str] = {}
    for endpoint in topology.endpoints():
        if "/" in endpoint.id:
            namespace, _, pod = endpoint.id.partition("/")
            base = f"{run.name}-{namespace}.{pod}"
        else:
            base = f"{run.name}-ext.{endpoint.id}"
        names[endpoint.id] = _unique(_UNSAFE.sub("_", base)[:_MAX_NAME], taken)
    return names


def _unique(name: str, taken: set[str]) -> str:
    candidate, counter = name, 1
    while candidate in taken:
        counter += 1
        candidate = f"{name}~{counter}"
    taken.add(candidate)
    return candidate


def interface_names(endpoint_ids: Iterable[str]) -> dict[str, str]:
    """Node-side veth names: an interface name has at most 15 characters (IFNAMSIZ),
    so they are numbered, not named after the endpoint or the run."""
    return {endpoint_id: f"veth{i}" for i, endpoint_id in enumerate(endpoint_ids)}
