"""The one small interface every backend implements.

A backend builds what a topology declares (``deploy``), brings it to a desired
state (``converge``: the labels and policies in force), and runs one round of
probes over a set of cells (``probe``). Retries, re-probing, comparison and
verdicts live in the engine, not in backends.
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar
from typing import Protocol as TypingProtocol

from harness.core.matrix import CellSet, ReachabilityMatrix
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import Protocol, Topology


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
class Capabilities:
    """What the engine needs to know of a backend.

    ``deterministic``: probing gives the same answer every time, at once (no CNI
    programming delay to wait out, so no re-probing). ``protocols``: what it can
    probe; other cells are observed as unsupported with ``unsupported_note``."""

    deterministic: bool = False
    protocols: frozenset[Protocol] = frozenset(Protocol)
    unsupported_note: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """What produced an observation, for reports and baselines."""

    backend: str
    cni: str = ""
    cni_version: str = ""
    kubernetes_version: str = ""
    #: Anything else worth recording (the kernel, the node image...).
    details: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def as_dict(self) -> dict[str, str]:
        out = {"backend": self.backend}
        for key in ("cni", "cni_version", "kubernetes_version"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        out.update(self.details)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> BackendInfo:
        known = {"backend", "cni", "cni_version", "kubernetes_version"}
        return cls(
            data.get("backend", "unknown backend"),
            data.get("cni", ""),
            data.get("cni_version", ""),
            data.get("kubernetes_version", ""),
            {k: v for k, v in data.items() if k not in known},
        )

    def label(self) -> str:
        """``kind (calico v3.32.1, Kubernetes v1.35.0)``, ``model (reference-model 0.1.0)``."""
        details = " ".join(v for v in (self.cni, self.cni_version) if v)
        parts = [p for p in (details, f"Kubernetes {self.kubernetes_version}" if self.kubernetes_version else "") if p]
        return f"{self.backend} ({', '.join(parts)})" if parts else self.backend


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
    capabilities: ClassVar[Capabilities] = Capabilities()

    @abc.abstractmethod
    def deploy(self, topology: Topology, settings: ImplementationSettings) -> Deployment:
        """Build (or reuse, when its shape is the same) namespaces, pods and external
        hosts. ``settings`` is the behaviour the scenario declares for what
        Kubernetes leaves to the implementation: backends that emulate or compute it
        honour it; a real CNI has its own. The state in force afterwards is
        undefined until :meth:`converge`."""

    @abc.abstractmethod
    def converge(self, state: DesiredState) -> None:
        """Make the labels and policies in force those of ``state`` (whose topology
        has the deployed shape). Backends that render everything do so from
        ``state``; cluster backends send what differs from the last state they
        converged to."""

    @abc.abstractmethod
    def probe(self, cells: CellSet, timeout: float) -> ReachabilityMatrix:
        """Run one round of probes over ``cells``, each bounded by ``timeout``
        seconds, and return one observation per cell (on the same axes), each
        with the command that reproduces it where there is one."""

    @abc.abstractmethod
    def info(self) -> BackendInfo:
        """What this backend is (backend, CNI and its version, ...)."""

    def reproduce_note(self) -> str:
        """What a reader of a failure needs to know before pasting its reproduce
        commands (whether what they run against still exists after the session)."""
        return ""

    def closing_notes(self) -> tuple[str, ...]:
        """What to tell the user once :meth:`close` has run (what it kept, and how to
        remove it)."""
        return ()

    def close(self) -> None:
        """Remove everything this backend created. Must be safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
