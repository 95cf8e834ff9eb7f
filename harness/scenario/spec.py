"""What a scenario file declares, as frozen objects: endpoints and ports in
expectation rules, expectations, steps, settings, expected failures, and the
scenario with the plan of each step."""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.matrix import Cell, Outcome
from harness.core.plan import StepPlan
from harness.core.selectors import LabelSelector
from harness.core.settings import ImplementationSettings
from harness.core.state import StepChanges
from harness.core.topology import PortProtocol, Protocol, Topology


@dataclass(frozen=True)
class EndpointPattern:
    """Shell-style pattern over endpoint names: ``x/a``, ``x/*``, ``*/*``, ``*``."""

    pattern: str

    def matches(self, endpoint_id: str, topology: Topology) -> bool:
        return fnmatch.fnmatchcase(endpoint_id, self.pattern)

    def __str__(self) -> str:
        return self.pattern


@dataclass(frozen=True)
class EndpointSelector:
    """Pods by namespace pattern and label selectors (labels in force at the step)."""

    namespace: str | None = None
    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None

    def matches(self, endpoint_id: str, topology: Topology) -> bool:
        if "/" not in endpoint_id or topology.service_destination(endpoint_id) is not None:
            return False  # selectors match pods only
        pod = topology.pod(endpoint_id)
        if self.namespace is not None and not fnmatch.fnmatchcase(pod.namespace, self.namespace):
            return False
        if self.namespace_selector is not None and not self.namespace_selector.matches(topology.namespace(pod.namespace).labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod.labels)

    def __str__(self) -> str:
        parts = []
        if self.namespace is not None:
            parts.append(f"namespace {self.namespace}")
        if self.namespace_selector is not None:
            parts.append(f"namespaces {self.namespace_selector}")
        if self.pod_selector is not None:
            parts.append(f"pods {self.pod_selector}")
        return " and ".join(parts) or "every pod"


EndpointMatcher = EndpointPattern | EndpointSelector


@dataclass(frozen=True)
class PortPattern:
    """``80/TCP``; ``*/UDP`` (every UDP port); ``*`` (every port)."""

    port: int | None = None
    protocol: Protocol | None = None

    def matches(self, key: PortProtocol) -> bool:
        return (self.port is None or self.port == key.port) and (self.protocol is None or self.protocol is key.protocol)

    def __str__(self) -> str:
        if self.port is None and self.protocol is None:
            return "*"
        return f"{'*' if self.port is None else self.port}/{self.protocol.value if self.protocol else 'TCP'}"


@dataclass(frozen=True)
class ExpectRule:
    sources: tuple[EndpointMatcher, ...]
    destinations: tuple[EndpointMatcher, ...]
    port: PortPattern
    #: The intended outcome: allowed or blocked, or for Services and names also
    #: partial, refused or name-not-resolved (:data:`RESULTS`).
    result: Outcome
    #: Where the rule is written (``steps[1].expect.rules[0]``), for messages.
    path: str = field(default="", compare=False)

    @property
    def allowed(self) -> bool:
        return self.result is Outcome.ALLOWED

    def describe(self) -> str:
        sources = ", ".join(map(str, self.sources))
        destinations = ", ".join(map(str, self.destinations))
        port = "" if self.port == PortPattern() else f" port {self.port}"
        return f"from {sources} to {destinations}{port}: {self.result.value}"


#: The outcomes an intent may name: allowed and blocked for every cell; partial (a
#: Service whose backends disagree), refused (a Service without endpoints) and
#: name-not-resolved (a name whose DNS query is blocked) for Service cells.
RESULTS = (Outcome.ALLOWED, Outcome.BLOCKED, Outcome.PARTIAL, Outcome.REFUSED, Outcome.NAME_NOT_RESOLVED)


class ExpectationForm(enum.Enum):
    RULES = "rules"
    MATRIX = "matrix"
    MODEL = "model"


@dataclass(frozen=True)
class TextMatrix:
    """One table of the matrix form: ``cells[(source, destination)] = outcome``
    (``.`` allowed, ``X`` blocked, ``P``, ``R``, ``N`` for Service cells), or None
    for a cell written ``-`` (not probed: a pod and itself)."""

    cells: Mapping[tuple[str, str], Outcome | None] = field(hash=False)


@dataclass(frozen=True)
class Expectation:
    form: ExpectationForm
    ports: tuple[PortProtocol, ...] | None = None
    default_allowed: bool = True
    rules: tuple[ExpectRule, ...] = ()
    matrices: Mapping[PortProtocol, TextMatrix] = field(default_factory=dict, hash=False)
    #: Where the expectation is written (``steps[0].expect``), for messages.
    path: str = field(default="expect", compare=False)


@dataclass(frozen=True)
class Step:
    name: str
    expect: Expectation
    changes: StepChanges = StepChanges()
    #: What enforcing the staged policies in force would give (audit mode), when declared.
    expect_when_enforced: Expectation | None = None


@dataclass(frozen=True)
class ScenarioSettings:
    implementation: ImplementationSettings = ImplementationSettings()
    probe_self: bool = False
    #: Probe every Service by its DNS name too (``db.production``), through the
    #: cluster DNS, so that policies that block DNS show.
    probe_names: bool = False


@dataclass(frozen=True)
class ExpectedFailure:
    """A scenario whose policies do not do what their author meant (a pitfall):
    ``reason`` says why, and each step names the cells expected to differ from
    the intent (``wrong_cells``) or the matrix the policies actually produce
    (``actual``)."""

    reason: str
    wrong_cells: Mapping[str, frozenset[Cell]] = field(default_factory=dict, hash=False)
    actual: Mapping[str, Expectation] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, eq=False)
class Scenario:
    name: str
    description: str
    path: Path
    topology: Topology
    steps: tuple[Step, ...]
    settings: ScenarioSettings = ScenarioSettings()
    tags: tuple[str, ...] = ()
    xfail: ExpectedFailure | None = None
    #: What each step runs, computed once by the loader.
    plans: tuple[StepPlan, ...] = ()
    #: What the loader has to say that is not an error (manifests of kinds it
    #: ignored), one line each, for the plugin or the command line to show.
    notes: tuple[str, ...] = ()

    @property
    def probes(self) -> int:
        return sum(plan.probes for plan in self.plans)
