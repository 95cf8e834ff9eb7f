"""Constraints files: named assertions that cluster administrators and security
teams make on top of every scenario ("no production pod reaches the internet",
"every namespace is isolated"), checked on every step of every scenario a run
loads (docs/constraints.md).

``load_constraints(path)`` returns a frozen :class:`ConstraintSet` or raises one
:class:`ScenarioError` naming the file, the field path and what was expected, as the
scenario loader does; rules are read by the scenario loader's own parser. What a
constraint means at a step is decided by :mod:`harness.engine.constraints`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import ScenarioError, describe_value
from harness.core.policy import PolicyType
from harness.core.topology import POD_CIDR, PodSpec, PortProtocol, Topology
from harness.scenario.loader import FieldReader, parse_port_pattern, parse_rule
from harness.scenario.spec import EndpointSelector, ExpectRule, PortPattern
from harness.scenario.yamlload import load_one, read_text

_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*\Z")
_NAME_FORM = "letters, digits, '-', '_' and '.', such as no-prod-internet"


class ConstraintForm(enum.Enum):
    """The field that says what a constraint asserts (exactly one per constraint)."""

    RULES = "rules"
    ISOLATED = "isolated"
    NO_EGRESS_OUTSIDE_CLUSTER = "no_egress_outside_cluster"


FORMS = tuple(form.value for form in ConstraintForm)


@dataclass(frozen=True)
class PodScope:
    """The pods a whole-topology form speaks of: pods of the namespaces matching one
    of ``selectors`` (each a namespace name pattern or a namespace label selector,
    narrowed by the same podSelector), with the labels in force at the step."""

    selectors: tuple[EndpointSelector, ...]

    def matches(self, pod: PodSpec, topology: Topology) -> bool:
        return any(s.matches(pod.id, topology) for s in self.selectors)

    def describe(self, lead: str) -> str:
        """``every pod labelled app=db of namespaces labelled env=prod`` (``lead``
        is ``every pod``, ``no pod``...)."""
        first = self.selectors[0]
        text = lead + (f" labelled {first.pod_selector}" if first.pod_selector is not None else "")
        if first.namespace_selector is not None and first.namespace_selector.is_empty:
            return f"{text} of every namespace"
        if first.namespace_selector is not None:
            return f"{text} of namespaces labelled {first.namespace_selector}"
        patterns = [str(s.namespace) for s in self.selectors]
        return f"{text} of namespace{'s' if len(patterns) > 1 or '*' in patterns[0] else ''} {', '.join(patterns)}"


@dataclass(frozen=True)
class AllowedDestination:
    """An exception of the ``no_egress_outside_cluster`` form: addresses of
    ``network``, on ``ports`` (every port when empty)."""

    network: ipaddress.IPv4Network
    ports: tuple[PortPattern, ...] = ()

    def allows(self, address: ipaddress.IPv4Address, key: PortProtocol) -> bool:
        return address in self.network and (not self.ports or any(p.matches(key) for p in self.ports))

    def __str__(self) -> str:
        return f"{self.network}" + (f" on {', '.join(map(str, self.ports))}" if self.ports else "")


@dataclass(frozen=True)
class Constraint:
    """One named constraint; the fields of its form are set, the others empty.

    - ``rules``: expectation rules (last matching rule wins); cells no rule matches
      are not constrained.
    - ``isolated``: every pod of ``pods`` is isolated in each of ``directions``: no
      traffic reaches (leaves) it unless a policy rule admits it.
    - ``no_egress_outside_cluster``: no pod of ``pods`` reaches an address outside
      the cluster, except ``allowed``.
    """

    name: str
    description: str
    form: ConstraintForm
    rules: tuple[ExpectRule, ...] = ()
    pods: PodScope | None = None
    directions: tuple[PolicyType, ...] = ()
    allowed: tuple[AllowedDestination, ...] = ()
    #: Where the constraint is written (``constraints[2]``), for messages.
    path: str = field(default="", compare=False)

    def summary(self) -> str:
        """What the constraint asserts, in one line."""
        if self.form is ConstraintForm.RULES:
            return "; ".join(rule.describe() for rule in self.rules)
        assert self.pods is not None
        if self.form is ConstraintForm.ISOLATED:
            words = " and ".join(d.value.lower() for d in self.directions)
            return f"{self.pods.describe('every pod')} is isolated for {words}"
        text = f"{self.pods.describe('no pod')} reaches an address outside the cluster"
        return text + (f" except {'; '.join(map(str, self.allowed))}" if self.allowed else "")


@dataclass(frozen=True)
class ConstraintSet:
    """The constraints of one file, in the order written; ``source`` names the file."""

    source: str
    constraints: tuple[Constraint, ...]

    def __len__(self) -> int:
        return len(self.constraints)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.constraints)


_TOP = ["constraints"]
_CONSTRAINT = ["name", "description", *FORMS]
_ISOLATED = ["namespaces", "podSelector", "directions"]
_OUTSIDE = ["namespaces", "podSelector", "except"]
_NAMESPACES_FORM = (
    "a namespace name or pattern such as production or team-*, a list of them, "
    "or a namespace label selector such as {matchLabels: {env: prod}}"
)


def _scope(r: FieldReader, doc: Mapping[Any, Any], path: str) -> PodScope:
    raw = doc["namespaces"]
    where = f"{path}.namespaces"
    pod_selector = r.selector(doc["podSelector"], f"{path}.podSelector") if "podSelector" in doc else None
    if isinstance(raw, Mapping):
        # A label selector, as the network-policy-api's namespaces peer: {} is every namespace.
        return PodScope((EndpointSelector(namespace_selector=r.selector(raw, where), pod_selector=pod_selector),))
    patterns = raw if isinstance(raw, list) else [raw]
    if not patterns:
        raise r.fail(where, "empty list", _NAMESPACES_FORM)
    selectors = []
    for i, item in enumerate(patterns):
        item_path = f"{where}[{i}]" if isinstance(raw, list) else where
        if not isinstance(item, str) or not item:
            raise r.fail(item_path, f"got {describe_value(item)}", _NAMESPACES_FORM)
        selectors.append(EndpointSelector(namespace=item, pod_selector=pod_selector))
    return PodScope(tuple(selectors))


def _directions(r: FieldReader, raw: object, path: str) -> tuple[PolicyType, ...]:
    items = r.seq(raw, path)
    if not items:
        raise r.fail(path, "empty list", "ingress, egress or both")
    out: list[PolicyType] = []
    for i, item in enumerate(items):
        if item not in ("ingress", "egress"):
            raise r.fail(f"{path}[{i}]", f"got {describe_value(item)}", "ingress or egress")
        direction = PolicyType.INGRESS if item == "ingress" else PolicyType.EGRESS
        if direction in out:
            raise r.fail(f"{path}[{i}]", f"{item} is given twice")
        out.append(direction)
    return tuple(out)


def _allowed(r: FieldReader, raw: object, path: str) -> AllowedDestination:
    doc = r.mapping(raw, path, ["cidr", "ports"], ["cidr"])
    form = "an IPv4 CIDR such as 10.0.0.0/8"
    text = r.string(doc["cidr"], f"{path}.cidr", form)
    try:
        network = ipaddress.IPv4Network(text)
    except ipaddress.AddressValueError:
        problem = "is IPv6: the harness models IPv4 only" if ":" in text else "is not an IPv4 CIDR"
        raise r.fail(f"{path}.cidr", f"{text!r} {problem}", form) from None
    except ValueError as err:
        raise r.fail(f"{path}.cidr", f"{text!r} is not an IPv4 CIDR ({err})", form) from None
    if network.subnet_of(POD_CIDR):
        raise r.fail(
            f"{path}.cidr",
            f"{network} is inside the cluster's pod range {POD_CIDR}",
            "addresses outside the cluster: the constraint is about them only",
        )
    ports: tuple[PortPattern, ...] = ()
    if "ports" in doc:
        ports = r.each(doc["ports"], f"{path}.ports", lambda item, p: parse_port_pattern(r, item, p))
        if not ports:
            raise r.fail(f"{path}.ports", "empty list", "ports such as 443/TCP or */UDP, or omit it for every port")
    return AllowedDestination(network, ports)


def _constraint(r: FieldReader, raw: object, path: str) -> Constraint:
    doc = r.mapping(raw, path, _CONSTRAINT, ["name", "description"])
    name = r.string(doc["name"], f"{path}.name", _NAME_FORM)
    if not _NAME.match(name):
        raise r.fail(f"{path}.name", f"{name!r} is not a valid constraint name", _NAME_FORM)
    description = r.string(doc["description"], f"{path}.description", "what the constraint asserts, in one line")
    forms = [f for f in FORMS if f in doc]
    if len(forms) != 1:
        found = " and ".join(forms) if forms else "none"
        raise r.fail(path, f"found {found} of {', '.join(FORMS)}", f"exactly one of {', '.join(FORMS)}")
    form = ConstraintForm(forms[0])
    where = f"{path}.{form.value}"
    if form is ConstraintForm.RULES:
        rules = r.each(doc["rules"], where, lambda item, p: parse_rule(r, item, p, None))
        if not rules:
            raise r.fail(where, "empty list", "rules from, to, port, result, as in a scenario's expect")
        return Constraint(name, description, form, rules=rules, path=path)
    if form is ConstraintForm.ISOLATED:
        body = r.mapping(doc["isolated"], where, _ISOLATED, ["namespaces"])
        directions: tuple[PolicyType, ...] = (PolicyType.INGRESS, PolicyType.EGRESS)
        if "directions" in body:
            directions = _directions(r, body["directions"], f"{where}.directions")
        return Constraint(name, description, form, pods=_scope(r, body, where), directions=directions, path=path)
    body = r.mapping(doc[form.value], where, _OUTSIDE, ["namespaces"])
    allowed = r.each(body.get("except", []), f"{where}.except", lambda item, p: _allowed(r, item, p))
    return Constraint(name, description, form, pods=_scope(r, body, where), allowed=allowed, path=path)


def parse_constraints(doc: object, source: str) -> ConstraintSet:
    """Validate a parsed constraints document; ``source`` names the file in errors."""
    r = FieldReader(source)
    top = r.mapping(doc, "", _TOP, ["constraints"])
    constraints = r.each(top["constraints"], "constraints", lambda item, p: _constraint(r, item, p))
    if not constraints:
        raise r.fail("constraints", "empty list", "at least one constraint")
    seen: dict[str, str] = {}
    for constraint in constraints:
        if constraint.name in seen:
            raise r.fail(
                f"{constraint.path}.name",
                f"constraint name {constraint.name!r} is also used by {seen[constraint.name]}",
                "a name unique in the file",
            )
        seen[constraint.name] = constraint.path
    return ConstraintSet(source, constraints)


def load_constraints(path: Path | str, shown: str | None = None) -> ConstraintSet:
    """The constraints file at ``path`` (``shown`` names it in messages)."""
    path = Path(path)
    source = shown if shown is not None else str(path)
    doc = load_one(read_text(path, source), source)
    if doc is None:
        raise ScenarioError(source, "", "the file is empty", "a mapping with constraints: (see docs/constraints.md)")
    return parse_constraints(doc, source)
