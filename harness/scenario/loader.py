"""Scenarios: what a YAML scenario file declares, parsed and validated.

``load_scenario(path)`` returns a frozen :class:`Scenario` or raises one
:class:`ScenarioError` naming the file, the field path and what was expected. The
format is documented in ``docs/scenario-format.md``.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from harness.core.cluster_policy import AnyPolicy, ClusterPolicy, is_cluster_policy, parse_cluster_policy
from harness.core.errors import HarnessError, PolicyError, ScenarioError
from harness.core.policy import parse_policy
from harness.core.selectors import LabelSelector, SelectorSyntaxError, check_label_key, check_label_value, parse_selector
from harness.core.settings import ModelSettings, SelfTraffic
from harness.core.topology import (
    POD_CIDR,
    PORT_NAME_FORM,
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    Topology,
    apply_label_changes,
    check_port_name,
    is_dns_label,
)
from harness.scenario.yamlload import load_all, load_one, read_text

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_EXTERNAL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")
T = TypeVar("T")


# -- what a scenario declares ----------------------------------------------------------


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
        if "/" not in endpoint_id:
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


@dataclass(frozen=True)
class ExpectRule:
    sources: tuple[EndpointMatcher, ...]
    destinations: tuple[EndpointMatcher, ...]
    port: PortPattern
    allowed: bool


class ExpectationForm(enum.Enum):
    RULES = "rules"
    MATRIX = "matrix"
    MODEL = "model"


@dataclass(frozen=True)
class TextMatrix:
    """One table of the matrix form: ``cells[(source, destination)] = allowed``."""

    cells: Mapping[tuple[str, str], bool] = field(hash=False)


@dataclass(frozen=True)
class Expectation:
    form: ExpectationForm
    ports: tuple[PortProtocol, ...] | None = None
    default_allowed: bool = True
    rules: tuple[ExpectRule, ...] = ()
    matrices: Mapping[PortProtocol, TextMatrix] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Step:
    name: str
    expect: Expectation
    apply: tuple[AnyPolicy, ...] = ()
    delete: tuple[str, ...] = ()
    label_namespaces: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict, hash=False)
    label_pods: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ScenarioSettings:
    model: ModelSettings = ModelSettings()
    probe_self: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path
    topology: Topology
    steps: tuple[Step, ...]
    settings: ScenarioSettings = ScenarioSettings()
    tags: tuple[str, ...] = ()
    xfail: str | None = None


# -- reading ---------------------------------------------------------------------------


class _Reader:
    """Typed access to parsed YAML that fails with the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str, expected: str = "") -> ScenarioError:
        return ScenarioError(self.source, path, message, expected)

    def mapping(
        self, raw: object, path: str, allowed: Sequence[str] | None = None, required: Sequence[str] = ()
    ) -> Mapping[Any, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"got {_kind(raw)}", "a mapping")
        if allowed is not None:
            for key in raw:
                if key not in allowed:
                    raise self.fail(_join(path, str(key)), "unknown field", "one of " + ", ".join(allowed))
        for key in required:
            if key not in raw:
                raise self.fail(_join(path, key), "required field is missing")
        return raw

    def seq(self, raw: object, path: str) -> list[Any]:
        if not isinstance(raw, list):
            raise self.fail(path, f"got {_kind(raw)}", "a list")
        return raw

    def string(self, raw: object, path: str, expected: str = "a string") -> str:
        if not isinstance(raw, str) or not raw:
            raise self.fail(path, f"got {_kind(raw)}", expected)
        return raw

    def boolean(self, raw: object, path: str) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(path, f"got {_kind(raw)}", "true or false")
        return raw

    def labels(self, raw: object, path: str) -> dict[str, str]:
        if raw is None:
            return {}
        labels = self.mapping(raw, path)
        for key, value in labels.items():
            problem = check_label_key(key) or check_label_value(value)
            if problem:
                raise self.fail(_join(path, str(key)), problem)
        return dict(labels)

    def label_changes(self, raw: object, path: str) -> dict[str, str | None]:
        changes = self.mapping(raw, path)
        for key, value in changes.items():
            problem = check_label_key(key) or (None if value is None else check_label_value(value))
            if problem:
                raise self.fail(_join(path, str(key)), problem, "a label value, or null to remove the label")
        return dict(changes)

    def selector(self, raw: object, path: str) -> LabelSelector:
        try:
            return parse_selector(raw)
        except SelectorSyntaxError as err:
            raise self.fail(_join(path, err.field), err.message, err.expected) from None

    def each(self, raw: object, path: str, parse: Callable[[object, str], T]) -> tuple[T, ...]:
        return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(self.seq(raw, path)))


def _kind(raw: object) -> str:
    if raw is None:
        return "nothing"
    if isinstance(raw, bool):
        return f"boolean {raw}"
    if isinstance(raw, int | float):
        return f"number {raw}"
    if isinstance(raw, str):
        return f"string {raw!r}" if len(raw) < 40 else "a string"
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, Mapping):
        return "a mapping"
    return type(raw).__name__


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}.{key}" if path else key


_PORT_FORMS = "a port such as 80/TCP, 53/UDP or 9000/SCTP, or {port: 8080, protocol: TCP, name: http}"


def _port_spec(r: _Reader, raw: object, path: str) -> PortSpec:
    if isinstance(raw, int | str) and not isinstance(raw, bool):
        try:
            key = PortProtocol.parse(str(raw))
        except HarnessError as err:
            raise r.fail(path, str(err), _PORT_FORMS) from None
        return PortSpec(key.port, key.protocol)
    spec = r.mapping(raw, path, ["port", "protocol", "name"], ["port"])
    number = spec["port"]
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        raise r.fail(f"{path}.port", f"got {_kind(number)}", "a port number 1-65535")
    proto_raw = spec.get("protocol", "TCP")
    try:
        protocol = Protocol(proto_raw)
    except ValueError:
        raise r.fail(f"{path}.protocol", f"got {_kind(proto_raw)}", "TCP, UDP or SCTP") from None
    name = spec.get("name")
    if name is not None:
        problem = check_port_name(name)
        if problem:
            raise r.fail(f"{path}.name", problem, PORT_NAME_FORM)
    return PortSpec(number, protocol, name)


def _ports(r: _Reader, raw: object, path: str) -> tuple[PortSpec, ...]:
    if raw is None:
        return ()
    ports = r.each(raw, path, lambda item, p: _port_spec(r, item, p))
    seen: dict[PortProtocol, int] = {}
    names: dict[str, int] = {}
    for i, spec in enumerate(ports):
        if spec.key in seen:
            raise r.fail(f"{path}[{i}]", f"{spec.key} is declared twice (also {path}[{seen[spec.key]}])")
        seen[spec.key] = i
        if spec.name is not None:
            # As the API server: container port names are unique within a pod,
            # whatever their protocol.
            if spec.name in names:
                raise r.fail(f"{path}[{i}].name", f"port name {spec.name!r} is used twice (also {path}[{names[spec.name]}])")
            names[spec.name] = i
    return ports


def _topology(r: _Reader, doc: Mapping[str, Any]) -> Topology:
    namespaces: list[NamespaceSpec] = []
    pods: list[PodSpec] = []
    raw_ns = r.mapping(doc.get("namespaces"), "namespaces")
    if not raw_ns:
        raise r.fail("namespaces", "no namespace declared", "at least one namespace with pods")
    for ns_name, ns_raw in raw_ns.items():
        path = f"namespaces.{ns_name}"
        if not is_dns_label(ns_name):
            raise r.fail(path, f"{ns_name!r} is not a valid namespace name", "a lowercase DNS label such as production")
        ns_raw = r.mapping(ns_raw if ns_raw is not None else {}, path, ["labels", "pods"])
        namespaces.append(NamespaceSpec(ns_name, r.labels(ns_raw.get("labels"), f"{path}.labels")))
        raw_pods = r.mapping(ns_raw.get("pods") if ns_raw.get("pods") is not None else {}, f"{path}.pods")
        for pod_name, pod_raw in raw_pods.items():
            ppath = f"{path}.pods.{pod_name}"
            if not is_dns_label(pod_name):
                raise r.fail(ppath, f"{pod_name!r} is not a valid pod name", "a lowercase DNS label such as db")
            pod_raw = r.mapping(pod_raw if pod_raw is not None else {}, ppath, ["labels", "ports"])
            pods.append(
                PodSpec(
                    ns_name,
                    pod_name,
                    r.labels(pod_raw.get("labels"), f"{ppath}.labels"),
                    _ports(r, pod_raw.get("ports"), f"{ppath}.ports"),
                )
            )
    if not pods:
        raise r.fail("namespaces", "no pod declared", "at least one pod (pods are the probe sources)")
    externals: list[ExternalHost] = []
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    raw_ext = doc.get("external")
    if raw_ext is not None:
        for name, ext_raw in r.mapping(raw_ext, "external").items():
            path = f"external.{name}"
            if not isinstance(name, str) or len(name) > 63 or not _EXTERNAL_NAME.match(name):
                raise r.fail(path, f"{name!r} is not a valid name", "lowercase letters, digits, '-' and '.', no '/'")
            ext_raw = r.mapping(ext_raw, path, ["ip", "ports"], ["ip"])
            try:
                if not isinstance(ext_raw["ip"], str):
                    raise TypeError("an address is written as text")
                ip = ipaddress.IPv4Address(ext_raw["ip"])
            except (ValueError, TypeError):
                raise r.fail(f"{path}.ip", f"got {_kind(ext_raw['ip'])}", "an IPv4 address such as 203.0.113.10") from None
            if ip in POD_CIDR:
                raise r.fail(f"{path}.ip", f"{ip} is inside the pod range {POD_CIDR}", "an address outside the cluster")
            if (
                ip.is_loopback
                or ip.is_multicast
                or ip.is_link_local
                or ip.is_reserved
                or ip in _THIS_NETWORK  # "this network": not a destination on most kernels
            ):
                raise r.fail(f"{path}.ip", f"{ip} cannot be a host address", "a unicast address such as 203.0.113.10")
            if ip in seen_ips:
                raise r.fail(f"{path}.ip", f"{ip} is already used by external.{seen_ips[ip]}")
            seen_ips[ip] = name
            externals.append(ExternalHost(name, ip, _ports(r, ext_raw.get("ports"), f"{path}.ports")))
    return Topology(tuple(namespaces), tuple(pods), tuple(externals))


def _parse_any(doc: object, source: str, namespace: str | None = None) -> AnyPolicy:
    """A NetworkPolicy, or a cluster-scoped policy by its kind (``namespace``, like
    ``kubectl apply -n``, does not apply to those)."""
    if is_cluster_policy(doc):
        return parse_cluster_policy(doc, source)
    return parse_policy(doc, source, namespace)


def _policies(r: _Reader, raw: object, path: str, base: Path) -> tuple[AnyPolicy, ...]:
    policies: list[AnyPolicy] = []
    for i, item in enumerate(r.seq(raw, path)):
        where = f"{path}[{i}]"
        if isinstance(item, Mapping) and "apiVersion" in item or isinstance(item, Mapping) and "kind" in item:
            try:
                policies.append(_parse_any(item, r.source))
            except PolicyError as err:
                raise PolicyError(
                    r.source,
                    err.policy,
                    _join(where, err.field),
                    err.message.split(": ", 1)[-1],
                    err.expected,
                    kind=err.kind,
                ) from None
            continue
        if isinstance(item, str):
            item = {"path": item}
        ref = r.mapping(item, where, ["path", "namespace"], ["path"])
        rel = r.string(ref["path"], f"{where}.path", "a file path relative to the scenario")
        namespace = ref.get("namespace")
        if namespace is not None:
            namespace = r.string(namespace, f"{where}.namespace", "a namespace name")
        file = base / rel
        source = str(file)
        try:
            exists = file.is_file()
        except OSError:  # a name too long for the file system, for one
            exists = False
        if not exists:
            raise r.fail(f"{where}.path", f"{rel} does not exist (looked in {base})", "a path relative to the scenario file")
        docs = [d for d in load_all(read_text(file, source), source) if d is not None]
        if not docs:
            raise r.fail(f"{where}.path", f"{rel} holds no manifest")
        for j, doc in enumerate(docs):
            if isinstance(doc, Mapping) and doc.get("kind") not in (None, "NetworkPolicy") and not is_cluster_policy(doc):
                raise ScenarioError(
                    source, f"document {j + 1}.kind", f"got {doc.get('kind')!r}", "NetworkPolicy or a cluster policy kind"
                )
            policies.append(_parse_any(doc, f"{source} (document {j + 1})" if len(docs) > 1 else source, namespace))
    refs: dict[str, int] = {}
    for i, policy in enumerate(policies):
        if policy.ref in refs:
            kind = "" if isinstance(policy, ClusterPolicy) else "NetworkPolicy "
            raise r.fail(path, f"{kind}{policy.ref} is given twice", "each policy once per step")
        refs[policy.ref] = i
    return tuple(policies)


def _port_pattern(r: _Reader, raw: object, path: str) -> PortPattern:
    if raw is None or raw == "*":
        return PortPattern()
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise r.fail(path, f"got {_kind(raw)}", "80/TCP, 80, */UDP or *")
    text = str(raw)
    number, _, proto = text.partition("/")
    try:
        protocol = Protocol(proto.upper()) if proto else (None if number == "*" else Protocol.TCP)
        port = None if number == "*" else int(number)
    except ValueError:
        raise r.fail(path, f"{text!r} is not a port pattern", "80/TCP, 80, */UDP or *") from None
    if port is not None and not 1 <= port <= 65535:
        raise r.fail(path, f"port {port} is outside 1-65535", "80/TCP, 80, */UDP or *")
    return PortPattern(port, protocol)


def _endpoint(r: _Reader, raw: object, path: str, topology: Topology) -> EndpointMatcher:
    if isinstance(raw, str) and raw:
        pattern = EndpointPattern(raw)
        if not any(pattern.matches(ep.id, topology) for ep in topology.endpoints()):
            known = ", ".join(ep.id for ep in topology.endpoints())
            raise r.fail(path, f"{raw!r} matches no pod or external host", f"one of {known}, or a pattern such as x/*")
        return pattern
    sel = r.mapping(raw, path, ["namespace", "namespaceSelector", "podSelector"])
    if not sel:
        raise r.fail(path, "empty selector", "namespace, namespaceSelector and/or podSelector")
    namespace = sel.get("namespace")
    if namespace is not None:
        namespace = r.string(namespace, f"{path}.namespace", "a namespace name or pattern")
        if not any(fnmatch.fnmatchcase(ns.name, namespace) for ns in topology.namespaces):
            raise r.fail(
                f"{path}.namespace",
                f"{namespace!r} matches no namespace",
                "one of " + ", ".join(ns.name for ns in topology.namespaces),
            )
    return EndpointSelector(
        namespace,
        r.selector(sel["namespaceSelector"], f"{path}.namespaceSelector") if "namespaceSelector" in sel else None,
        r.selector(sel["podSelector"], f"{path}.podSelector") if "podSelector" in sel else None,
    )


def _endpoints(r: _Reader, raw: object, path: str, topology: Topology) -> tuple[EndpointMatcher, ...]:
    if isinstance(raw, list):
        if not raw:
            raise r.fail(path, "empty list", "a pattern, a selector, or a list of them")
        return r.each(raw, path, lambda item, p: _endpoint(r, item, p, topology))
    return (_endpoint(r, raw, path, topology),)


def _result(r: _Reader, raw: object, path: str) -> bool:
    if raw in ("allowed", "blocked"):
        return raw == "allowed"
    raise r.fail(path, f"got {_kind(raw)}", "allowed or blocked")


def _text_matrix(r: _Reader, raw: object, path: str) -> TextMatrix:
    text = r.string(raw, path, "a table: a header of destinations, then one row per source")
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise r.fail(path, "a matrix needs a header line and at least one row")
    header = lines[0]
    if len(set(header)) != len(header):
        raise r.fail(path, "a destination appears twice in the header")
    cells: dict[tuple[str, str], bool] = {}
    seen_rows: set[str] = set()
    for number, row in enumerate(lines[1:], start=2):
        source, symbols = row[0], row[1:]
        if source in seen_rows:
            raise r.fail(f"{path} line {number}", f"source {source} appears twice")
        seen_rows.add(source)
        if len(symbols) != len(header):
            raise r.fail(
                f"{path} line {number}",
                f"row {source} has {len(symbols)} cells for {len(header)} columns",
                "one '.' or 'X' per column",
            )
        for dest, symbol in zip(header, symbols, strict=True):
            if symbol not in (".", "X"):
                raise r.fail(f"{path} line {number}", f"cell {source} → {dest} is {symbol!r}", "'.' (allowed) or 'X' (blocked)")
            cells[(source, dest)] = symbol == "."
    return TextMatrix(MappingProxyType(cells))


def probed_ports(topology: Topology, expectation: Expectation) -> tuple[PortProtocol, ...]:
    return expectation.ports if expectation.ports is not None else topology.port_keys()


def _expectation(r: _Reader, raw: object, path: str, topology: Topology) -> Expectation:
    doc = r.mapping(raw, path, ["ports", "default", "rules", "matrix", "model"])
    forms = [f for f in ("rules", "matrix", "model") if f in doc]
    if not forms and "default" in doc:
        forms = ["rules"]  # `default` alone: every cell has that outcome
    if len(forms) != 1:
        raise r.fail(
            path,
            f"found {' and '.join(forms) if forms else 'none'} of rules, matrix, model",
            "exactly one of rules, matrix or model",
        )
    ports: tuple[PortProtocol, ...] | None = None
    if "ports" in doc:
        items = []
        for i, item in enumerate(r.seq(doc["ports"], f"{path}.ports")):
            try:
                key = PortProtocol.parse(str(item)) if isinstance(item, int | str) and not isinstance(item, bool) else None
            except HarnessError:
                key = None
            if key is None:
                raise r.fail(f"{path}.ports[{i}]", f"got {_kind(item)}", "a port such as 80/TCP")
            if not topology.serving(key):
                raise r.fail(
                    f"{path}.ports[{i}]",
                    f"no pod or external host serves {key}",
                    "one of " + ", ".join(map(str, topology.port_keys())),
                )
            items.append(key)
        if not items:
            raise r.fail(f"{path}.ports", "empty list", "the ports to probe, or omit it to probe every port")
        ports = tuple(items)
    form = ExpectationForm(forms[0])
    if "default" in doc and form is not ExpectationForm.RULES:
        raise r.fail(f"{path}.default", "default goes with rules only")
    if form is ExpectationForm.MODEL:
        if doc["model"] is not True:
            raise r.fail(f"{path}.model", f"got {_kind(doc['model'])}", "true")
        return Expectation(form, ports)
    if form is ExpectationForm.RULES:
        default = _result(r, doc.get("default", "allowed"), f"{path}.default")
        rules = []
        for i, rule_raw in enumerate(r.seq(doc.get("rules", []), f"{path}.rules")):
            rp = f"{path}.rules[{i}]"
            rule = r.mapping(rule_raw, rp, ["from", "to", "port", "result"], ["from", "to", "result"])
            rules.append(
                ExpectRule(
                    _endpoints(r, rule["from"], f"{rp}.from", topology),
                    _endpoints(r, rule["to"], f"{rp}.to", topology),
                    _port_pattern(r, rule.get("port"), f"{rp}.port"),
                    _result(r, rule["result"], f"{rp}.result"),
                )
            )
        return Expectation(form, ports, default, tuple(rules))
    tables: dict[PortProtocol, TextMatrix] = {}
    raw_tables = r.mapping(doc["matrix"], f"{path}.matrix")
    for key_raw, table_raw in raw_tables.items():
        tp = f"{path}.matrix.{key_raw}"
        try:
            key = PortProtocol.parse(str(key_raw))
        except HarnessError:
            raise r.fail(tp, f"{key_raw!r} is not a port", "a port such as 80/TCP as the key of each table") from None
        tables[key] = _text_matrix(r, table_raw, tp)
    wanted = ports if ports is not None else topology.port_keys()
    for key in wanted:
        if key not in tables:
            raise r.fail(f"{path}.matrix", f"no table for {key}", "one table per probed port: " + ", ".join(map(str, wanted)))
    sources = {p.id for p in topology.pods}
    for key, table in tables.items():
        tp = f"{path}.matrix.{key}"
        if key not in wanted:
            raise r.fail(tp, f"{key} is not probed in this step", "tables only for " + ", ".join(map(str, wanted)))
        rows = {s for s, _ in table.cells}
        cols = {d for _, d in table.cells}
        dests = {ep.id for ep in topology.serving(key)}
        if rows != sources:
            raise r.fail(tp, _dimension_problem("rows", rows, sources), "one row per pod")
        if cols != dests:
            raise r.fail(tp, _dimension_problem("columns", cols, dests), f"one column per endpoint serving {key}")
    return Expectation(form, ports, matrices=MappingProxyType(tables))


def _dimension_problem(what: str, got: set[str], want: set[str]) -> str:
    parts = []
    if want - got:
        parts.append("missing " + ", ".join(sorted(want - got)))
    if got - want:
        parts.append("unknown " + ", ".join(sorted(got - want)))
    return f"wrong {what}: " + "; ".join(parts)


def _settings(r: _Reader, raw: object) -> ScenarioSettings:
    if raw is None:
        return ScenarioSettings()
    doc = r.mapping(raw, "settings", ["self_traffic", "ipblock_matches_pods", "probe_self"])
    self_traffic = doc.get("self_traffic", "allowed")
    try:
        st = SelfTraffic(self_traffic)
    except ValueError:
        raise r.fail("settings.self_traffic", f"got {_kind(self_traffic)}", "allowed or policy") from None
    return ScenarioSettings(
        ModelSettings(st, r.boolean(doc.get("ipblock_matches_pods", True), "settings.ipblock_matches_pods")),
        r.boolean(doc.get("probe_self", False), "settings.probe_self"),
    )


_TOP = ["name", "description", "tags", "xfail", "settings", "namespaces", "external", "policies", "expect", "steps"]


def parse_scenario(doc: object, path: Path) -> Scenario:
    """Validate a parsed scenario document (``path`` names it and anchors relative paths)."""
    r = _Reader(str(path))
    top = r.mapping(doc, "", _TOP, ["description", "namespaces"])
    name = top.get("name", path.stem.removesuffix(".scenario"))
    name = r.string(name, "name", "a scenario name such as default-deny")
    if not re.match(r"^[A-Za-z0-9][-A-Za-z0-9_.]*\Z", name):
        raise r.fail("name", f"{name!r} is not a valid scenario name", "letters, digits, '-', '_' and '.'")
    description = r.string(top["description"], "description", "a one-line description")
    tags = r.each(top.get("tags", []), "tags", lambda t, p: r.string(t, p, "a tag"))
    xfail = top.get("xfail")
    if xfail is not None:
        xfail = r.string(xfail, "xfail", "the reason the policy does not do what its author meant")
    settings = _settings(r, top.get("settings"))
    topology = _topology(r, top)
    base = path.parent
    if "steps" in top:
        for key in ("policies", "expect"):
            if key in top:
                raise r.fail(
                    key,
                    "a scenario with steps declares policies and expect inside its steps",
                    "either policies + expect, or steps",
                )
        raw_steps = r.seq(top["steps"], "steps")
        if not raw_steps:
            raise r.fail("steps", "empty list", "at least one step")
    else:
        if "expect" not in top:
            raise r.fail("expect", "required field is missing", "the intended reachability (rules, matrix or model)")
        raw_steps = [{"name": "main", "apply": top.get("policies", []), "expect": top["expect"]}]
    steps = []
    current = topology
    applied: set[str] = set()
    versions: dict[str, str] = {}  # API version of cluster policies -> the first one's ref
    step_names: set[str] = set()
    for i, raw_step in enumerate(raw_steps):
        sp = f"steps[{i}]" if "steps" in top else ""
        s = r.mapping(raw_step, sp, ["name", "apply", "delete", "label_namespaces", "label_pods", "expect"], ["expect"])
        step_name = r.string(s.get("name", f"step-{i + 1}"), _join(sp, "name"), "a step name")
        if step_name in step_names:
            raise r.fail(_join(sp, "name"), f"step name {step_name!r} is used twice")
        step_names.add(step_name)
        delete = r.each(
            s.get("delete", []), _join(sp, "delete"), lambda d, p: r.string(d, p, "namespace/name of an applied policy")
        )
        for j, ref in enumerate(delete):
            if ref not in applied:
                raise r.fail(
                    f"{_join(sp, 'delete')}[{j}]",
                    f"no policy {ref} is in force at this step",
                    "one of " + (", ".join(sorted(applied)) or "(none applied yet)"),
                )
            applied.discard(ref)
        apply_path = _join(sp, "apply") if "steps" in top else "policies"
        apply = _policies(r, s.get("apply", []), apply_path, base)
        known_ns = {ns.name for ns in topology.namespaces}
        for policy in apply:
            if isinstance(policy, ClusterPolicy):
                _check_api_versions(policy, versions)
                applied.add(policy.ref)
                continue
            if policy.namespace not in known_ns:
                raise PolicyError(
                    policy.source,
                    policy.ref,
                    "metadata.namespace",
                    f"namespace {policy.namespace!r} is not declared in the scenario",
                    "one of " + ", ".join(sorted(known_ns)),
                )
            applied.add(policy.ref)
        label_ns: dict[str, Mapping[str, str | None]] = {}
        for ns_name, changes in r.mapping(s.get("label_namespaces", {}), _join(sp, "label_namespaces")).items():
            lp = f"{_join(sp, 'label_namespaces')}.{ns_name}"
            if ns_name not in known_ns:
                raise r.fail(lp, f"namespace {ns_name!r} is not declared", "one of " + ", ".join(sorted(known_ns)))
            parsed = r.label_changes(changes, lp)
            if "kubernetes.io/metadata.name" in parsed:
                raise r.fail(f"{lp}.kubernetes.io/metadata.name", "this label is set by the API server and cannot change")
            label_ns[ns_name] = MappingProxyType(parsed)
            current = current.with_namespace_labels(ns_name, apply_label_changes(current.namespace(ns_name).labels, parsed))
        label_pods: dict[str, Mapping[str, str | None]] = {}
        for pod_id, changes in r.mapping(s.get("label_pods", {}), _join(sp, "label_pods")).items():
            lp = f"{_join(sp, 'label_pods')}.{pod_id}"
            if pod_id not in {p.id for p in topology.pods}:
                raise r.fail(lp, f"pod {pod_id!r} is not declared", "namespace/pod of a declared pod")
            parsed = r.label_changes(changes, lp)
            label_pods[pod_id] = MappingProxyType(parsed)
            current = current.with_pod_labels(pod_id, apply_label_changes(current.pod(pod_id).labels, parsed))
        expect = _expectation(r, s["expect"], _join(sp, "expect"), current)
        steps.append(Step(step_name, expect, apply, delete, MappingProxyType(label_ns), MappingProxyType(label_pods)))
    return Scenario(name, description, path, topology, tuple(steps), settings, tags, xfail)


def _check_api_versions(policy: ClusterPolicy, versions: dict[str, str]) -> None:
    """One scenario uses one API version of the cluster-scoped kinds: no CNI enforces
    both (Calico 3.29-3.31 enforce v1alpha1, 3.32 and later v1alpha2)."""
    versions.setdefault(policy.api_version, policy.ref)
    if len(versions) > 1:
        others = ", ".join(f"{ref} ({version})" for version, ref in versions.items() if version != policy.api_version)
        raise ScenarioError(
            policy.source,
            "apiVersion",
            f"{policy.ref} is {policy.api_version}, but the scenario also applies {others}",
            "either ClusterNetworkPolicy (v1alpha2) or AdminNetworkPolicy/BaselineAdminNetworkPolicy (v1alpha1) in one scenario",
        )


def parse_topology(namespaces: object, external: object = None, source: str = "<python>") -> Topology:
    """Validate a topology given in the scenario format's ``namespaces:`` and
    ``external:`` forms."""
    doc: dict[str, object] = {"namespaces": namespaces}
    if external is not None:
        doc["external"] = external
    return _topology(_Reader(source), doc)


def parse_expectation(raw: object, topology: Topology, source: str = "<python>") -> Expectation:
    """Validate one ``expect:`` mapping against a topology (labels in force)."""
    return _expectation(_Reader(source), raw, "expect", topology)


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    source = str(path)
    doc = load_one(read_text(path, source), source)
    if doc is None:
        raise ScenarioError(source, "", "the file is empty", "a scenario mapping (see docs/scenario-format.md)")
    return parse_scenario(doc, path)
