"""The one small interface every backend implements.

A backend turns a declared :class:`~harness.core.topology.Topology` into something that
runs (``deploy``), changes policies and labels on it, and runs one round of probes.
Retries, re-probing and comparison live in the shared probe engine and runner, not
in backends.
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar
from typing import Protocol as TypingProtocol

from harness.core.cluster_policy import AnyPolicy
from harness.core.matrix import Cell, Observation
from harness.core.settings import ModelSettings
from harness.core.topology import Endpoint, PodSpec, PortProtocol, Protocol, Topology


class OptionSource(TypingProtocol):
    """Where a backend reads its settings: ``pytest.Config`` qualifies, and so does
    :class:`Options` for plain scripts."""

    def getoption(self, name: str, default: Any = ...) -> Any: ...


class Options:
    """Settings for a backend built outside pytest: ``Options(probe_timeout=1.0)``.

    Names are the pytest option destinations (``probe_timeout``, ``kubeconfig``...).
    """

    def __init__(self, **values: Any) -> None:
        self._values = values

    def getoption(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)


@dataclass(frozen=True)
class Probe:
    """One connection attempt: from a pod to an endpoint on a port/protocol."""

    source: PodSpec
    destination: Endpoint
    port: PortProtocol

    @property
    def cell(self) -> Cell:
        return Cell(self.source.id, self.destination.id, self.port)


@dataclass(frozen=True)
class Deployment:
    """What a backend built for a topology: the address of every endpoint."""

    topology: Topology
    addresses: Mapping[str, ipaddress.IPv4Address] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "addresses", MappingProxyType(dict(self.addresses)))


class Backend(abc.ABC):
    """A place where scenarios run. Implementations: model, emulated, kind, existing."""

    #: Name used with ``--backend``.
    name: ClassVar[str]
    #: True when probing gives the same answer every time (no retries needed).
    deterministic: ClassVar[bool] = False
    #: Protocols this backend can probe; the probe engine observes the others as
    #: UNSUPPORTED, with ``unsupported_note`` (or a generic note) as the detail.
    protocols: ClassVar[frozenset[Protocol]] = frozenset(Protocol)
    unsupported_note: ClassVar[str] = ""

    @abc.abstractmethod
    def deploy(self, topology: Topology) -> Deployment:
        """Build (or reuse) namespaces, pods and external hosts with their declared
        labels, and no policies. Called again with another topology: tear down or
        reuse what exists."""

    @abc.abstractmethod
    def apply_policies(self, policies: Sequence[AnyPolicy]) -> None:
        """Create or replace these policies (keyed by namespace/name, or by
        Kind/name for the cluster-scoped kinds)."""

    @abc.abstractmethod
    def delete_policies(self, refs: Sequence[str]) -> None:
        """Delete policies by ``namespace/name`` (``Kind/name`` when cluster-scoped)."""

    @abc.abstractmethod
    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        """Replace a namespace's labels with ``labels`` (the complete new set)."""

    @abc.abstractmethod
    def set_pod_labels(self, pod_id: str, labels: Mapping[str, str]) -> None:
        """Replace a pod's labels with ``labels`` (the complete new set)."""

    @abc.abstractmethod
    def probe(self, probes: Sequence[Probe], timeout: float) -> dict[Probe, Observation]:
        """Run one round of probes, each bounded by ``timeout`` seconds, and return
        one observation per probe (with its reproduce command)."""

    @abc.abstractmethod
    def reproduce_command(self, probe: Probe) -> str:
        """The command a user can paste to run this probe by hand."""

    def use_settings(self, settings: ModelSettings) -> None:
        """Behaviour Kubernetes leaves to the implementation, as the scenario declares
        it. Backends that emulate or compute it (model, emulated) honour it; a real
        CNI has its own and ignores this."""

    def begin_step(self, scenario: str, step: str) -> None:
        """Called before a step is probed, for backends whose reproduce commands
        need to name the scenario and step (the model backend)."""

    def reset(self) -> None:
        """Between scenarios: remove every policy and restore declared labels.
        The default re-deploys nothing; backends that keep state override it."""

    def close(self) -> None:
        """Remove everything this backend created. Must be safe to call twice."""

    def describe(self) -> dict[str, str]:
        """Metadata for reports and baselines (backend, cni, cni_version, ...)."""
        return {"backend": self.name}

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
