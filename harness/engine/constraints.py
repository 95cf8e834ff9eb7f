"""Constraints checked on every step of a scenario (docs/constraints.md).

For each step plan, each constraint of a :class:`~harness.scenario.constraints.ConstraintSet`
is checked two ways:

* exhaustively by the reference model. Rules cover every cell of the step's
  topology on every port an endpoint serves. The whole-topology forms cover more:
  every port of every protocol, and every IPv4 address outside the cluster, as
  ranges the policies in force treat alike (:mod:`harness.model.representatives`),
  one representative address and port per range, asked of a model of the step's
  state with a representative host per address range. Those hosts exist only in
  that model: nothing is ever sent to them.
* on a probing backend (anything but the model), on the cells actually probed: the
  step's observed matrix, allowed and blocked observations only (an error or a
  refusal is not the network's verdict).

A constraint applies at a step when it constrains at least one cell there; one that
applies at no step of a scenario is "not applicable" to it. Everything here is
computed on whole arrays, and a step's coverage model is built for a few ports at a
time, so memory stays bounded on a thousand-pod step.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import Tier
from harness.core.matrix import (
    ALLOWED_CODE,
    LISTED_CELLS,
    NOT_PROBED,
    Axes,
    Cell,
    CellSet,
    Codes,
    Mask,
    Outcome,
    ReachabilityMatrix,
)
from harness.core.plan import StepPlan, probe_grid
from harness.core.policy import PolicyType
from harness.core.topology import ExternalHost, PodSpec, PortProtocol, Topology
from harness.engine.constraint_results import ConstraintResult, Finding, Group, ScenarioConstraints, StepCheck, Violation
from harness.engine.pipeline import ScenarioResult
from harness.model import ReferenceModel, model_of
from harness.model.representatives import (
    PortRange,
    address_ranges,
    policy_networks,
    policy_port_ranges,
    port_ranges,
)
from harness.scenario import Scenario
from harness.scenario.constraints import Constraint, ConstraintForm, ConstraintSet, PodScope
from harness.scenario.spec import RESULTS, EndpointMatcher, ExpectRule

#: Violating cells kept per constraint, step and way of finding them (the first
#: :data:`~harness.core.matrix.LISTED_CELLS` with the model's explanation); the
#: others are counted by group.
KEPT_CELLS = 200
#: Groups kept for the cells beyond those listed in a failure text.
KEPT_GROUPS = 100
#: Most cells (pods x destinations x ports) one coverage model computes before it
#: is dropped and the next ports get a new one: bounds memory on large steps.
MODEL_BUDGET = 8_000_000

_DIRECTION_WORD = {PolicyType.INGRESS: "ingress", PolicyType.EGRESS: "egress"}


# -- checking --------------------------------------------------------------------------


def check_scenario(constraints: ConstraintSet, scenario: Scenario, result: ScenarioResult | None = None) -> ScenarioConstraints:
    """Every constraint on every step of ``scenario``: by the model, and in the
    observations of ``result`` when it comes from a probing backend."""
    probing = result is not None and result.backend.backend != "model"
    observed: dict[str, ReachabilityMatrix] = {}
    if result is not None and probing:
        observed = {step.name: step.observed for step in result.steps}
    per_constraint: list[list[StepCheck]] = [[] for _ in constraints.constraints]
    for plan in scenario.plans:
        for i, check in enumerate(check_step(constraints.constraints, plan, observed.get(plan.name))):
            per_constraint[i].append(check)
    results = tuple(
        ConstraintResult(c.name, c.description, c.summary(), tuple(steps))
        for c, steps in zip(constraints.constraints, per_constraint, strict=True)
    )
    backend = result.backend.label() if result is not None and probing else ""
    return ScenarioConstraints(constraints.source, results, backend)


def check_step(constraints: Sequence[Constraint], plan: StepPlan, observed: ReachabilityMatrix | None = None) -> list[StepCheck]:
    """Each constraint at one step, in order: by the model, and on ``observed`` (the
    step's observations on a probing backend) when given."""
    step = _Step(plan)
    by_model: dict[int, Finding] = {}
    whole = [(i, c) for i, c in enumerate(constraints) if c.form is not ConstraintForm.RULES]
    for i, constraint in enumerate(constraints):
        if constraint.form is ConstraintForm.RULES:
            by_model[i] = step.rules_by_model(constraint.rules)
    if whole:
        by_model.update(step.whole_by_model(whole))
    return [
        StepCheck(plan.name, by_model[i], step.observed(constraint, observed) if observed is not None else None)
        for i, constraint in enumerate(constraints)
    ]


def _matcher_mask(matchers: Sequence[EndpointMatcher], ids: Sequence[str], topology: Topology) -> Mask:
    return np.array([any(m.matches(i, topology) for m in matchers) for i in ids], dtype=bool)


def _rule_codes(rules: Sequence[ExpectRule], cells: CellSet, topology: Topology) -> dict[PortProtocol, Codes]:
    """Per port, the outcome the rules require of each cell (the last matching rule
    wins, as in a scenario's expect), :data:`NOT_PROBED` where no rule matches: those
    cells are not constrained."""
    axes = cells.axes
    codes = {p: np.full(axes.shape, NOT_PROBED, dtype=np.int8) for p in axes.ports}
    for rule in rules:
        sources = _matcher_mask(rule.sources, axes.sources, topology)
        destinations = _matcher_mask(rule.destinations, axes.destinations, topology)
        block = np.outer(sources, destinations)
        for port in axes.ports:
            if rule.port.matches(port):
                codes[port][block] = rule.result.code
    for port in axes.ports:
        codes[port][~cells.masks[port]] = NOT_PROBED
    return codes


#: The outcomes that are a verdict on a cell (those an intent may name): an error, a
#: wrong responder or an unsupported probe says nothing about the policies.
_VERDICTS = tuple(outcome.code for outcome in RESULTS)


def _rule_breaches(required: Codes, found: Codes) -> Iterator[tuple[Mask, Outcome, str, int]]:
    """(cells, what they are, what the rules require, the code found) for every way a
    rule is broken: a constrained cell whose verdict is not the required one."""
    constrained = required != NOT_PROBED
    for code in _VERDICTS:
        wrong = constrained & (found == code) & (required != code)
        if not wrong.any():
            continue
        for wanted in _VERDICTS:
            mask = wrong & (required == wanted)
            if mask.any():
                yield mask, Outcome.from_code(code), Outcome.from_code(wanted).value, code


def _group(endpoint: str) -> str:
    namespace, slash, _ = endpoint.partition("/")
    return f"{namespace}/*" if slash else endpoint


class _Labels:
    """Names of a grid's rows and columns as shown, and the group of each (a pod's
    namespace, or the host itself) for counting the cells a text does not list."""

    def __init__(
        self, sources: Sequence[str], destinations: Sequence[str], destination_groups: Sequence[str] | None = None
    ) -> None:
        self.sources = sources
        self.destinations = destinations
        self.source_groups, self.source_group_of = _grouping([_group(s) for s in sources])
        groups = destination_groups if destination_groups is not None else [_group(d) for d in destinations]
        self.destination_groups, self.destination_group_of = _grouping(groups)


def _grouping(groups: Sequence[str]) -> tuple[list[str], npt.NDArray[np.int64]]:
    index: dict[str, int] = {}
    of = np.array([index.setdefault(g, len(index)) for g in groups], dtype=np.int64)
    return list(index), of


Explain = Callable[[int, int], str]
Observe = Callable[[int, int], tuple[str, str, bool]]


class _Collector:
    """Accumulates one constraint's violating cells at one step, bounded: a count,
    the first :data:`KEPT_CELLS` cells (the first ones explained), and group counts
    of the cells beyond those a failure text lists."""

    def __init__(self) -> None:
        self.checked = 0
        self.count = 0
        self.cells: list[Violation] = []
        self.groups: Counter[tuple[str, str, str]] = Counter()

    def add(
        self,
        mask: Mask,
        labels: _Labels,
        port: str,
        outcome: Outcome,
        required: str,
        explain: Explain,
        observe: Observe | None = None,
    ) -> None:
        found = int(mask.sum())
        if not found:
            return
        before = self.count
        self.count += found
        rows, cols = np.nonzero(mask)
        keep = min(found, max(0, KEPT_CELLS - len(self.cells)))
        for r, c in zip(rows[:keep].tolist(), cols[:keep].tolist(), strict=True):
            listed = len(self.cells) < LISTED_CELLS
            seen, command, agrees = observe(r, c) if observe is not None else ("", "", True)
            why = explain(r, c) if listed else ""
            self.cells.append(
                Violation(labels.sources[r], labels.destinations[c], port, outcome, required, why, seen, command, agrees)
            )
        # The cells past those a failure text lists, counted by group.
        skip = max(0, LISTED_CELLS - before)
        if found > skip:
            width = len(labels.destination_groups)
            flat = labels.source_group_of[rows[skip:]] * width + labels.destination_group_of[cols[skip:]]
            counts = np.bincount(flat)
            for index in np.flatnonzero(counts).tolist():
                key = (labels.source_groups[index // width], labels.destination_groups[index % width], port)
                self.groups[key] += int(counts[index])

    def finding(self) -> Finding:
        groups = tuple(Group(s, d, p, n) for (s, d, p), n in self.groups.most_common(KEPT_GROUPS))
        return Finding(self.checked, self.count, tuple(self.cells), groups)


_ISOLATION = "{} isolation (only what a policy rule admits)"
_OUTSIDE = "blocked (outside the cluster)"


class _Step:
    """One step plan, with what its checks share: the model of its state and its grid
    of served ports."""

    def __init__(self, plan: StepPlan) -> None:
        self.plan = plan
        self.topology = plan.topology
        self.addresses = plan_addresses(self.topology)

    @cached_property
    def model(self) -> ReferenceModel:
        return model_of(self.plan.state, self.addresses, self.plan.settings)

    def scope(self, pods: PodScope) -> Mask:
        return np.array([pods.matches(p, self.topology) for p in self.topology.pods], dtype=bool)

    def _explainer(self, axes: Axes, port: PortProtocol) -> Explain:
        model = self.model

        def explain(row: int, column: int) -> str:
            return model.explain(axes.sources[row], axes.destinations[column], port)

        return explain

    # -- by the model ----------------------------------------------------------------

    def rules_by_model(self, rules: Sequence[ExpectRule]) -> Finding:
        """Every pod to every endpoint on every port some endpoint serves; a pod and
        itself left out (what a CNI does with it is its own business)."""
        collector = _Collector()
        # Services by name too when the step probes names (their DNS is part of the verdict).
        names = any(
            (found := self.topology.service_destination(d)) is not None and found[1] for d in self.plan.expected.destinations
        )
        cells = probe_grid(self.topology, self.topology.port_keys(), probe_self=False, names=names)
        if not cells:
            return collector.finding()
        matrix = self.model.reachability(cells)
        required = _rule_codes(rules, cells, self.topology)
        labels = _Labels(cells.axes.sources, cells.axes.destinations)
        for port in cells.axes.ports:
            collector.checked += int((required[port] != NOT_PROBED).sum())
            for mask, outcome, words, _ in _rule_breaches(required[port], matrix.codes(port)):
                collector.add(mask, labels, str(port), outcome, words, self._explainer(cells.axes, port))
        return collector.finding()

    def coverage(self, constraints: Sequence[Constraint]) -> _Coverage:
        """The step's topology with a representative host per address range outside the
        cluster, and the port ranges, that the policies in force and ``constraints``
        themselves tell apart."""
        state = self.plan.state
        networks = [*policy_networks(state.effective_policies, state.cluster_policy_list)]
        port_ends = [*policy_port_ranges(state.effective_policies, state.cluster_policy_list, self.topology)]
        for constraint in constraints:
            for exception in constraint.allowed:
                networks.append(exception.network)
                port_ends += [(p.protocol, p.port, p.port) for p in exception.ports if p.port is not None and p.protocol]
        hosts = address_ranges(networks)
        outside = (*self.topology.externals, *(h.host() for h in hosts))
        pods = self.topology.pods
        shown = [*(p.id for p in pods), *(e.id for e in self.topology.externals), *(str(h) for h in hosts)]
        return _Coverage(
            Topology(self.topology.namespaces, pods, outside),
            {**self.addresses, **{h.endpoint_id: h.first for h in hosts}},
            outside,
            port_ranges(port_ends),
            # Pods are grouped by namespace, hosts and ranges each on their own.
            _Labels([p.id for p in pods], shown, [*(_group(p.id) for p in pods), *shown[len(pods) :]]),
        )

    def whole_by_model(self, constraints: Sequence[tuple[int, Constraint]]) -> dict[int, Finding]:
        """The isolation and outside-the-cluster constraints over the step's coverage:
        one representative address and port per range."""
        coverage = self.coverage([c for _, c in constraints])
        state = self.plan.state
        n_pods, width = len(self.topology.pods), len(coverage.topology.pods) + len(coverage.outside)
        ids = [*(p.id for p in self.topology.pods), *(e.id for e in coverage.outside)]
        scopes = {i: self.scope(c.pods) for i, c in constraints if c.pods is not None}
        collectors = {i: _Collector() for i, _ in constraints}
        per_model = max(1, MODEL_BUDGET // max(1, n_pods * width))
        for chunk in _chunks(coverage.ports, per_model):
            # A new model per chunk of ports: its matrices are dropped with it.
            model = ReferenceModel(
                coverage.topology, state.effective_policies, coverage.addresses, self.plan.settings, state.cluster_policy_list
            )
            for port_range in chunk:
                key = port_range.key
                allowed = model.allowed_matrix(key)
                defaults = _defaults(model, key)

                def explain(row: int, column: int, key: PortProtocol = key, model: ReferenceModel = model) -> str:
                    return model.explain(ids[row], ids[column], key)

                for i, constraint in constraints:
                    if constraint.form is ConstraintForm.ISOLATED:
                        checks = [_isolation_cells(d, scopes[i], allowed, defaults) for d in constraint.directions]
                    else:
                        checks = [_outside_cells(constraint, scopes[i], allowed, coverage.outside, key)]
                    for in_scope, violating, required in checks:
                        collectors[i].checked += int(in_scope.sum())
                        collectors[i].add(violating, coverage.labels, str(port_range), Outcome.ALLOWED, required, explain)
        return {i: c.finding() for i, c in collectors.items()}

    # -- on the observations -----------------------------------------------------------

    def observed(self, constraint: Constraint, observed: ReachabilityMatrix) -> Finding:
        """The constraint on the cells actually probed, allowed and blocked ones, with
        whether the model finds the same violation on each."""
        collector = _Collector()
        axes = observed.axes
        self_cells = _self_cells(axes)
        verdicts = {p: np.isin(observed.codes(p), _VERDICTS) & ~self_cells for p in axes.ports}
        cells = CellSet(axes, verdicts)
        model = self.model
        predicted = model.reachability(CellSet(axes, {p: np.ones(axes.shape, bool) for p in axes.ports}))
        labels = _Labels(axes.sources, axes.destinations)

        def observer(port: PortProtocol, agreeing: Mask) -> Observe:
            def observe(row: int, column: int) -> tuple[str, str, bool]:
                seen = observed.observation(Cell(axes.sources[row], axes.destinations[column], port))
                if seen is None:
                    return "not probed", "", bool(agreeing[row, column])
                return seen.describe(), seen.command, bool(agreeing[row, column])

            return observe

        if constraint.form is ConstraintForm.RULES:
            required = _rule_codes(constraint.rules, cells, self.topology)
            for port in axes.ports:
                collector.checked += int((required[port] != NOT_PROBED).sum())
                for mask, outcome, words, code in _rule_breaches(required[port], observed.codes(port)):
                    agreeing = mask & (predicted.codes(port) == code)
                    collector.add(mask, labels, str(port), outcome, words, self._explainer(axes, port), observer(port, agreeing))
            return collector.finding()
        assert constraint.pods is not None
        scope = self.scope(constraint.pods)
        rows = np.array([model.pod_index[s] for s in axes.sources], dtype=np.int64)
        # Service columns are left to their backends' pod columns: isolation and the
        # outside of the cluster are about pods and hosts.
        cols = np.array([model.dest_index.get(d, 0) for d in axes.destinations], dtype=np.int64)
        kinds = [self.topology.endpoint(d) if self.topology.has_endpoint(d) else None for d in axes.destinations]
        pod_column = np.array([isinstance(k, PodSpec) for k in kinds], dtype=bool)
        host_column = np.array([isinstance(k, ExternalHost) for k in kinds], dtype=bool)
        row_scope = scope[rows]
        column_pod = np.where(pod_column, cols, 0)
        column_scope = pod_column & scope[column_pod] if len(scope) else pod_column
        for port in axes.ports:
            probed = cells.masks[port]
            seen_allowed = observed.codes(port) == ALLOWED_CODE
            predicted_allowed = predicted.codes(port) == ALLOWED_CODE
            checks: list[tuple[Mask, Mask, str]] = []  # (in scope, admitted by a rule, required)
            if constraint.form is ConstraintForm.ISOLATED:
                default_in, default_out = _defaults(model, port)
                ingress, egress = model.sides(port)
                for direction in constraint.directions:
                    if direction is PolicyType.INGRESS:
                        # The destination's ingress side, [destination, source] in the model.
                        admitted = (ingress & ~default_in)[np.ix_(column_pod, rows)].T & pod_column[None, :]
                        checks.append((probed & column_scope[None, :], admitted, _ISOLATION.format("ingress")))
                    else:
                        admitted = (egress & ~default_out)[np.ix_(rows, cols)]
                        columns = pod_column | host_column
                        checks.append((probed & np.outer(row_scope, columns), admitted, _ISOLATION.format("egress")))
            else:
                forbidden = np.array(
                    [
                        is_host and not any(a.allows(self.addresses[d], port) for a in constraint.allowed)
                        for d, is_host in zip(axes.destinations, host_column.tolist(), strict=True)
                    ],
                    dtype=bool,
                )
                checks.append((probed & np.outer(row_scope, forbidden), np.zeros(axes.shape, bool), _OUTSIDE))
            for in_scope, admitted, words in checks:
                collector.checked += int(in_scope.sum())
                violating = in_scope & seen_allowed & ~admitted
                agreeing = violating & predicted_allowed
                explain = self._explainer(axes, port)
                collector.add(violating, labels, str(port), Outcome.ALLOWED, words, explain, observer(port, agreeing))
        return collector.finding()


@dataclass(frozen=True)
class _Coverage:
    """A step's topology with a representative host per address range outside the
    cluster (``outside``: the declared hosts, then the representatives), their
    addresses, the port ranges to ask about, and the labels cells are shown with."""

    topology: Topology
    addresses: Mapping[str, ipaddress.IPv4Address]
    outside: tuple[ExternalHost, ...]
    ports: tuple[PortRange, ...]
    labels: _Labels


def _isolation_cells(direction: PolicyType, scope: Mask, allowed: Mask, defaults: tuple[Mask, Mask]) -> tuple[Mask, Mask, str]:
    """(cells in scope, the violating ones, what is required) of an isolation in one
    direction, on a coverage model's grid (every pod to pods then hosts): ingress into
    the pods in scope, egress from them; a pod and itself left out."""
    n_pods, width = allowed.shape
    if direction is PolicyType.INGRESS:
        in_scope = np.zeros((n_pods, width), bool)
        in_scope[:, :n_pods] = scope[None, :]
        by_default = np.zeros((n_pods, width), bool)
        by_default[:, :n_pods] = defaults[0].T  # the model's ingress side is [destination, source]
    else:
        in_scope = np.repeat(scope[:, None], width, axis=1)
        by_default = defaults[1]
    in_scope &= ~np.eye(n_pods, width, dtype=bool)
    return in_scope, allowed & by_default & in_scope, _ISOLATION.format(_DIRECTION_WORD[direction])


def _outside_cells(
    constraint: Constraint, scope: Mask, allowed: Mask, outside: Sequence[ExternalHost], key: PortProtocol
) -> tuple[Mask, Mask, str]:
    """(cells in scope, the violating ones, what is required) of a no-egress-outside
    constraint on a coverage model's grid: from the pods in scope to every host
    outside the cluster that no exception allows on ``key``."""
    n_pods = len(scope)
    forbidden = np.array([not any(a.allows(h.ip, key) for a in constraint.allowed) for h in outside], dtype=bool)
    in_scope = np.zeros(allowed.shape, bool)
    in_scope[:, n_pods:] = np.outer(scope, forbidden)
    return in_scope, allowed & in_scope, _OUTSIDE


def _self_cells(axes: Axes) -> Mask:
    mask = np.zeros(axes.shape, bool)
    for row, source in enumerate(axes.sources):
        column = axes.column(source)
        if column is not None:
            mask[row, column] = True
    return mask


def _defaults(model: ReferenceModel, key: PortProtocol) -> tuple[Mask, Mask]:
    """``(ingress, egress)`` in the model's layout: the sides that allow a cell only
    because nothing decides it (no NetworkPolicy isolates the pod in that direction,
    and no Accept of a cluster policy's Admin or Baseline tier admits it)."""
    ingress, egress = model.sides(key)
    default_in = ingress & ~model.ingress_isolated[:, None]
    default_out = egress & ~model.egress_isolated[:, None]
    if not model.tiers.empty:
        for tier in (Tier.ADMIN, Tier.BASELINE):
            accepted_in, _ = model.tiers.decide(tier, PolicyType.INGRESS, key)
            accepted_out, _ = model.tiers.decide(tier, PolicyType.EGRESS, key)
            default_in = default_in & ~accepted_in
            default_out = default_out & ~accepted_out
    return default_in, default_out


def _chunks(items: Sequence[PortRange], size: int) -> Iterator[Sequence[PortRange]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
