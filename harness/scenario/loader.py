"""Scenarios: what a YAML scenario file declares, parsed and validated.

``load_scenario(path)`` returns a frozen :class:`Scenario` or raises one
:class:`ScenarioError` naming the file, the field path and what was expected. The
format is documented in ``docs/scenario-format.md``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from harness.core.calico.policy import STAGED_KINDS, is_staged, parse_staged_policy
from harness.core.cluster_policy import ClusterPolicy, ClusterPolicyKind, is_cluster_policy, parse_cluster_policy
from harness.core.errors import HarnessError, PolicyError, ScenarioError, describe_value
from harness.core.matrix import Cell, Outcome
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.selectors import LabelSelector, SelectorSyntaxError, check_label_key, check_label_value, parse_selector
from harness.core.services import SERVICE_CIDR, ServicePort, ServiceSpec, dns_pod, fqdn_to_short
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.state import DesiredState, Manifest, StepChanges, object_ref
from harness.core.topology import (
    NAMESPACE_NAME_LABEL,
    POD_CIDR,
    PORT_NAME_FORM,
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    Topology,
    check_port_name,
    is_dns_label,
)
from harness.scenario.plans import parse_cell, plan_steps
from harness.scenario.sources import FileSource, WorkingTree, relative_to_scenario
from harness.scenario.spec import (
    RESULTS,
    EndpointMatcher,
    EndpointPattern,
    EndpointSelector,
    Expectation,
    ExpectationForm,
    ExpectedFailure,
    ExpectRule,
    PortPattern,
    Scenario,
    ScenarioSettings,
    Step,
    TextMatrix,
)
from harness.scenario.workloads import WorkloadSet, merge_workloads, read_workloads
from harness.scenario.yamlload import MAX_FILE_BYTES, load_all, load_one

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_EXTERNAL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")
T = TypeVar("T")


# -- reading ---------------------------------------------------------------------------


class _Reader:
    """Typed access to parsed YAML that fails with the field path; ``files`` is where
    the files it refers to are read (the working tree, or a git revision)."""

    def __init__(self, source: str, files: FileSource | None = None) -> None:
        self.source = source
        self.files: FileSource = files if files is not None else WorkingTree(MAX_FILE_BYTES)

    def fail(self, path: str, message: str, expected: str = "") -> ScenarioError:
        return ScenarioError(self.source, path, message, expected)

    def mapping(
        self, raw: object, path: str, allowed: Sequence[str] | None = None, required: Sequence[str] = ()
    ) -> Mapping[Any, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"got {describe_value(raw)}", "a mapping")
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
            raise self.fail(path, f"got {describe_value(raw)}", "a list")
        return raw

    def string(self, raw: object, path: str, expected: str = "a string") -> str:
        if not isinstance(raw, str) or not raw:
            raise self.fail(path, f"got {describe_value(raw)}", expected)
        return raw

    def boolean(self, raw: object, path: str) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(path, f"got {describe_value(raw)}", "true or false")
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


#: The typed reader, for other files of the scenario format (constraints) to read
#: with the same field paths and messages.
FieldReader = _Reader


#: How a value is named in messages ("string 'x'", "a list", "nothing").


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
        raise r.fail(f"{path}.port", f"got {describe_value(number)}", "a port number 1-65535")
    proto_raw = spec.get("protocol", "TCP")
    try:
        protocol = Protocol(proto_raw)
    except ValueError:
        raise r.fail(f"{path}.protocol", f"got {describe_value(proto_raw)}", "TCP, UDP or SCTP") from None
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


_SERVICE_PORT_FORMS = (
    "a port such as 80 or 53/UDP (the target port is the same), or "
    "{port: 8001, targetPort: 8000 or a container port name, protocol: TCP, name: http}"
)


def _service_port(r: _Reader, raw: object, path: str) -> ServicePort:
    if isinstance(raw, int | str) and not isinstance(raw, bool):
        try:
            key = PortProtocol.parse(str(raw))
        except HarnessError as err:
            raise r.fail(path, str(err), _SERVICE_PORT_FORMS) from None
        return ServicePort(key.port, key.protocol)
    spec = r.mapping(raw, path, ["port", "targetPort", "protocol", "name"], ["port"])
    base = _port_spec(r, {k: v for k, v in spec.items() if k in ("port", "protocol")}, path)
    target = spec.get("targetPort", base.port)
    if isinstance(target, str) and not target.isdigit():
        problem = check_port_name(target)
        if problem:
            raise r.fail(f"{path}.targetPort", problem, "a port number or " + PORT_NAME_FORM)
    elif isinstance(target, bool) or not isinstance(target, int | str) or not 1 <= int(target) <= 65535:
        raise r.fail(f"{path}.targetPort", f"got {describe_value(target)}", "a port number 1-65535 or a container port name")
    else:
        target = int(target)
    name = spec.get("name")
    if name is not None and not is_dns_label(name):
        raise r.fail(f"{path}.name", f"{name!r} is not a valid Service port name", "a lowercase DNS label such as http")
    return ServicePort(base.port, base.protocol, target, name)


def parse_service(r: _Reader, namespace: str, name: object, raw: object, path: str) -> ServiceSpec:
    """A ``namespaces.<ns>.services.<name>`` entry: ``selector`` and ``ports``."""
    if not is_dns_label(name):
        raise r.fail(path, f"{name!r} is not a valid Service name", "a lowercase DNS label such as db")
    doc = r.mapping(raw, path, ["selector", "ports"], ["selector", "ports"])
    selector = r.labels(doc["selector"], f"{path}.selector")
    if not selector:
        raise r.fail(
            f"{path}.selector",
            "empty selector",
            "the labels of the pods behind the Service (a Service without a selector has no endpoints the harness can know)",
        )
    ports = r.each(doc["ports"], f"{path}.ports", lambda item, p: _service_port(r, item, p))
    if not ports:
        raise r.fail(f"{path}.ports", "empty list", "at least one port")
    seen: dict[PortProtocol, int] = {}
    for i, port in enumerate(ports):
        if port.key in seen:
            raise r.fail(f"{path}.ports[{i}]", f"{port.key} is declared twice (also {path}.ports[{seen[port.key]}])")
        seen[port.key] = i
    if len(ports) > 1 and any(p.name is None for p in ports):
        i = next(i for i, p in enumerate(ports) if p.name is None)
        raise r.fail(f"{path}.ports[{i}].name", "required field is missing", "a name for each port of a Service with several")
    return ServiceSpec(namespace, name, selector, ports)


def _topology(r: _Reader, doc: Mapping[str, Any], workloads: WorkloadSet | None = None) -> Topology:
    namespaces: list[NamespaceSpec] = []
    pods: list[PodSpec] = []
    services: list[ServiceSpec] = []
    #: Namespaces declared by hand with their own labels (which replace the manifests').
    labelled: set[str] = set()
    raw_ns = r.mapping(doc.get("namespaces") if doc.get("namespaces") is not None else {}, "namespaces")
    if not raw_ns and workloads is None:
        raise r.fail("namespaces", "no namespace declared", "at least one namespace with pods")
    for ns_name, ns_raw in raw_ns.items():
        path = f"namespaces.{ns_name}"
        if not is_dns_label(ns_name):
            raise r.fail(path, f"{ns_name!r} is not a valid namespace name", "a lowercase DNS label such as production")
        ns_raw = r.mapping(ns_raw if ns_raw is not None else {}, path, ["labels", "pods", "services"])
        if "labels" in ns_raw:
            labelled.add(ns_name)
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
        raw_services = r.mapping(ns_raw.get("services") if ns_raw.get("services") is not None else {}, f"{path}.services")
        for svc_name, svc_raw in raw_services.items():
            services.append(parse_service(r, ns_name, svc_name, svc_raw, f"{path}.services.{svc_name}"))
    if workloads is not None:
        namespaces, pods, services = merge_workloads(workloads, namespaces, labelled, pods, services)
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
                raise r.fail(
                    f"{path}.ip", f"got {describe_value(ext_raw['ip'])}", "an IPv4 address such as 203.0.113.10"
                ) from None
            if ip in POD_CIDR:
                raise r.fail(f"{path}.ip", f"{ip} is inside the pod range {POD_CIDR}", "an address outside the cluster")
            if ip in SERVICE_CIDR:
                raise r.fail(f"{path}.ip", f"{ip} is inside the Service range {SERVICE_CIDR}", "an address outside the cluster")
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
            if topology_name_clash := next((s for s in services if s.short_name == name), None):
                raise r.fail(path, f"{name!r} is also the DNS name of Service {topology_name_clash.id}", "another name")
            externals.append(ExternalHost(name, ip, _ports(r, ext_raw.get("ports"), f"{path}.ports")))
    return Topology(tuple(namespaces), tuple(pods), tuple(externals), tuple(services))


#: The kinds a scenario applies, and how each is read.
POLICY_KINDS = ("NetworkPolicy", *(kind.value for kind in ClusterPolicyKind), *sorted(STAGED_KINDS))


def parse_manifest(doc: object, source: str, namespace: str | None = None) -> Manifest:
    """One policy manifest of any kind a scenario applies (``namespace``, like
    ``kubectl apply -n``, is for the namespaced kinds)."""
    if isinstance(doc, Mapping) and is_staged(doc):
        return parse_staged_policy(doc, source, namespace)
    if is_cluster_policy(doc):
        return parse_cluster_policy(doc, source)
    if isinstance(doc, Mapping) and doc.get("kind") not in (None, "NetworkPolicy"):
        kind = doc.get("kind")
        raise ScenarioError(
            source,
            "kind",
            f"expected a NetworkPolicy, got {kind if isinstance(kind, str) else describe_value(kind)}",
            "one of " + ", ".join(POLICY_KINDS) + " (other manifests belong in workloads or are left out)",
        )
    return parse_policy(doc, source, namespace)


def _policies(r: _Reader, raw: object, path: str, scenario: Path) -> tuple[Manifest, ...]:
    policies: list[Manifest] = []
    for i, item in enumerate(r.seq(raw, path)):
        where = f"{path}[{i}]"
        if isinstance(item, Mapping) and ("apiVersion" in item or "kind" in item):
            try:
                policies.append(parse_manifest(item, r.source, None))
            except PolicyError as err:
                raise PolicyError(r.source, err.policy, _join(where, err.field), err.detail, err.expected, err.kind) from None
            except ScenarioError as err:
                raise r.fail(_join(where, err.field), err.message, err.expected) from None
            continue
        if isinstance(item, str):
            item = {"path": item}
        ref = r.mapping(item, where, ["path", "namespace"], ["path"])
        rel = r.string(ref["path"], f"{where}.path", "a file path relative to the scenario")
        namespace = ref.get("namespace")
        if namespace is not None:
            namespace = r.string(namespace, f"{where}.namespace", "a namespace name")
        file = relative_to_scenario(scenario, rel)
        shown = r.files.display(file)
        if r.files.is_dir(file):
            raise r.fail(f"{where}.path", f"{rel} is a directory", "a YAML file of policy manifests")
        if not r.files.is_file(file):
            raise r.fail(
                f"{where}.path",
                f"{rel} does not exist (looked in {r.files.display(scenario.parent)} of the {r.files.label})",
                "a path relative to the scenario file",
            )
        try:
            docs = [d for d in load_all(r.files.read_text(file), shown) if d is not None]
            for j, doc in enumerate(docs):
                policies.append(parse_manifest(doc, f"{shown} (document {j + 1})" if len(docs) > 1 else shown, namespace))
        except ScenarioError as err:
            # Named by its file and field there, and by where the scenario refers to it.
            raise err.referenced_at(f"{where} of {r.source}") from None
        if not docs:
            raise r.fail(f"{where}.path", f"{rel} holds no manifest")
    seen: set[str] = set()
    for policy in policies:
        if object_ref(policy) in seen:
            raise r.fail(path, f"{_describe(policy)} is given twice", "each policy once per step")
        seen.add(object_ref(policy))
    return tuple(policies)


def _describe(policy: Manifest) -> str:
    if isinstance(policy, NetworkPolicy):
        return f"NetworkPolicy {policy.ref}"
    return policy.ref if isinstance(policy, ClusterPolicy) else str(policy)


def _port_pattern(r: _Reader, raw: object, path: str) -> PortPattern:
    if raw is None or raw == "*":
        return PortPattern()
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise r.fail(path, f"got {describe_value(raw)}", "80/TCP, 80, */UDP or *")
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


def _endpoint(r: _Reader, raw: object, path: str, topology: Topology | None) -> EndpointMatcher:
    """A pattern or a selector; checked against ``topology`` when given (a file
    read without one, such as constraints, decides later what it matches)."""
    if isinstance(raw, str) and raw:
        # A Service's full DNS name stands for its name destination (db.production).
        pattern = EndpointPattern(fqdn_to_short(raw))
        if topology is None:
            return pattern
        ids = [ep.id for ep in topology.endpoints()] + [s.id for s in topology.services]
        ids += [s.short_name for s in topology.services]
        if not any(pattern.matches(i, topology) for i in ids):
            known = ", ".join(ids)
            what = "pod, external host or Service" if topology.services else "pod or external host"
            raise r.fail(path, f"{raw!r} matches no {what}", f"one of {known}, or a pattern such as x/*")
        return pattern
    sel = r.mapping(raw, path, ["namespace", "namespaceSelector", "podSelector"])
    if not sel:
        raise r.fail(path, "empty selector", "namespace, namespaceSelector and/or podSelector")
    namespace = sel.get("namespace")
    if namespace is not None:
        namespace = r.string(namespace, f"{path}.namespace", "a namespace name or pattern")
        if topology is not None and not any(fnmatch.fnmatchcase(ns.name, namespace) for ns in topology.namespaces):
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


def _endpoints(r: _Reader, raw: object, path: str, topology: Topology | None) -> tuple[EndpointMatcher, ...]:
    if isinstance(raw, list):
        if not raw:
            raise r.fail(path, "empty list", "a pattern, a selector, or a list of them")
        return r.each(raw, path, lambda item, p: _endpoint(r, item, p, topology))
    return (_endpoint(r, raw, path, topology),)


def _result(r: _Reader, raw: object, path: str) -> bool:
    """A default outcome: allowed or blocked."""
    if raw in ("allowed", "blocked"):
        return raw == "allowed"
    raise r.fail(path, f"got {describe_value(raw)}", "allowed or blocked")


_RESULT_WORDS = "allowed or blocked (for a Service also " + ", ".join(o.value for o in RESULTS[2:]) + ")"


def _rule_result(r: _Reader, raw: object, path: str) -> Outcome:
    for outcome in RESULTS:
        if raw == outcome.value:
            return outcome
    raise r.fail(path, f"got {describe_value(raw)}", _RESULT_WORDS)


#: Matrix symbols an intent may use, and what they stand for.
_SYMBOL_RESULTS = {outcome.symbol: outcome for outcome in RESULTS}


def parse_rule(r: FieldReader, raw: object, path: str, topology: Topology | None) -> ExpectRule:
    """One rule of the expectation language (``from``, ``to``, ``port``, ``result``),
    its patterns checked against ``topology`` when given."""
    rule = r.mapping(raw, path, ["from", "to", "port", "result"], ["from", "to", "result"])
    return ExpectRule(
        _endpoints(r, rule["from"], f"{path}.from", topology),
        _endpoints(r, rule["to"], f"{path}.to", topology),
        _port_pattern(r, rule.get("port"), f"{path}.port"),
        _rule_result(r, rule["result"], f"{path}.result"),
        path=path,
    )


def parse_port_pattern(r: FieldReader, raw: object, path: str) -> PortPattern:
    """A port of the expectation language: ``80/TCP``, ``80``, ``*/UDP`` or ``*``."""
    return _port_pattern(r, raw, path)


_MATRIX_HINT = (
    "a table: a header line of destinations, then one row per source. If the header is "
    "indented deeper than the rows, write the block as `80/TCP: |4` (explicit indentation), "
    "or YAML ends it at the first row"
)


def _text_matrix(r: _Reader, raw: object, path: str) -> TextMatrix:
    text = r.string(raw, path, _MATRIX_HINT)
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise r.fail(path, "a matrix needs a header line and at least one row", _MATRIX_HINT)
    header = lines[0]
    if len(set(header)) != len(header):
        raise r.fail(path, "a destination appears twice in the header")
    cells: dict[tuple[str, str], Outcome | None] = {}
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
                "one '.' or 'X' per column ('-' where nothing is probed)",
            )
        for dest, symbol in zip(header, symbols, strict=True):
            if symbol != "-" and symbol not in _SYMBOL_RESULTS:
                raise r.fail(
                    f"{path} line {number}",
                    f"cell {source} → {dest} is {symbol!r}",
                    "'.' (allowed), 'X' (blocked) or '-' (not probed: a pod and itself); "
                    "for a Service also 'P' (partial), 'R' (refused) or 'N' (name not resolved)",
                )
            cells[(source, fqdn_to_short(dest))] = None if symbol == "-" else _SYMBOL_RESULTS[symbol]
    return TextMatrix(MappingProxyType(cells))


def _probed_ports(
    r: _Reader, doc: Mapping[Any, Any], path: str, topology: Topology, names: bool
) -> tuple[PortProtocol, ...] | None:
    if "ports" not in doc:
        return None
    items = []
    for i, item in enumerate(r.seq(doc["ports"], f"{path}.ports")):
        try:
            key = PortProtocol.parse(str(item)) if isinstance(item, int | str) and not isinstance(item, bool) else None
        except HarnessError:
            key = None
        if key is None:
            raise r.fail(f"{path}.ports[{i}]", f"got {describe_value(item)}", "a port such as 80/TCP")
        if not topology.destination_ids(key, names):
            raise r.fail(
                f"{path}.ports[{i}]",
                f"no pod or external host serves {key}"
                if not topology.services
                else f"no pod, external host or Service serves {key}",
                "one of " + ", ".join(map(str, topology.port_keys())),
            )
        items.append(key)
    if not items:
        raise r.fail(f"{path}.ports", "empty list", "the ports to probe, or omit it to probe every port")
    return tuple(items)


def _expectation(r: _Reader, raw: object, path: str, topology: Topology, names: bool = False) -> Expectation:
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
    ports = _probed_ports(r, doc, path, topology, names)
    form = ExpectationForm(forms[0])
    if "default" in doc and form is not ExpectationForm.RULES:
        raise r.fail(f"{path}.default", "default goes with rules only")
    if form is ExpectationForm.MODEL:
        if doc["model"] is not True:
            raise r.fail(f"{path}.model", f"got {describe_value(doc['model'])}", "true")
        return Expectation(form, ports, path=path)
    if form is ExpectationForm.RULES:
        default = _result(r, doc.get("default", "allowed"), f"{path}.default")
        rules = []
        for i, rule_raw in enumerate(r.seq(doc.get("rules", []), f"{path}.rules")):
            rules.append(parse_rule(r, rule_raw, f"{path}.rules[{i}]", topology))
        return Expectation(form, ports, default, tuple(rules), path=path)
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
        dests = set(topology.destination_ids(key, names))
        if rows != sources:
            raise r.fail(tp, _dimension_problem("rows", rows, sources), "one row per pod")
        if cols != dests:
            raise r.fail(tp, _dimension_problem("columns", cols, dests), f"one column per endpoint serving {key}")
    return Expectation(form, ports, matrices=MappingProxyType(tables), path=path)


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
    doc = r.mapping(raw, "settings", ["self_traffic", "ipblock_matches_pods", "probe_self", "probe_names"])
    self_traffic = doc.get("self_traffic", "allowed")
    try:
        st = SelfTraffic(self_traffic)
    except ValueError:
        raise r.fail("settings.self_traffic", f"got {describe_value(self_traffic)}", "allowed or policy") from None
    return ScenarioSettings(
        ImplementationSettings(st, r.boolean(doc.get("ipblock_matches_pods", True), "settings.ipblock_matches_pods")),
        r.boolean(doc.get("probe_self", False), "settings.probe_self"),
        r.boolean(doc.get("probe_names", False), "settings.probe_names"),
    )


_XFAIL_FORMS = (
    "a mapping with reason (why the policies do not do what their author meant) and wrong_cells "
    "(the cells expected to differ, written as the harness prints them: 'x/a → y/b:80/TCP') or "
    "actual (the matrix the policies produce, in the forms of expect)"
)


def _xfail(
    r: _Reader, raw: object, steps: Sequence[tuple[str, Mapping[Any, Any], Topology]], several: bool, by_name: bool = False
) -> ExpectedFailure:
    """``steps``: (name, raw step, topology with the labels in force) of each step."""
    if isinstance(raw, str):
        raise r.fail(
            "xfail",
            "an expected failure must name what it expects: the cells that differ from the intent, "
            "or the matrix the policies actually produce",
            _XFAIL_FORMS,
        )
    doc = r.mapping(raw, "xfail", ["reason", "wrong_cells", "actual"], ["reason"])
    reason = r.string(doc["reason"], "xfail.reason", "why the policies do not do what their author meant")
    if ("wrong_cells" in doc) == ("actual" in doc):
        raise r.fail("xfail", "give exactly one of wrong_cells and actual", _XFAIL_FORMS)
    names = [name for name, _, _ in steps]
    topologies = {name: topology for name, _, topology in steps}

    def per_step(value: object, field_name: str) -> dict[str, object]:
        if not several:
            return {names[0]: value}
        mapping = r.mapping(value, f"xfail.{field_name}", names)
        return dict(mapping)

    if "wrong_cells" in doc:
        wrong: dict[str, frozenset[Cell]] = {}
        for step, items in per_step(doc["wrong_cells"], "wrong_cells").items():
            where = f"xfail.wrong_cells.{step}" if several else "xfail.wrong_cells"
            cells = []
            for i, item in enumerate(r.seq(items, where)):
                cell = parse_cell(item) if isinstance(item, str) else None
                if cell is None:
                    raise r.fail(f"{where}[{i}]", f"got {describe_value(item)}", "a cell such as 'x/a → y/b:80/TCP'")
                cells.append(cell)
            wrong[step] = frozenset(cells)
        return ExpectedFailure(reason, MappingProxyType(wrong))
    actual: dict[str, Expectation] = {}
    for step, value in per_step(doc["actual"], "actual").items():
        where = f"xfail.actual.{step}" if several else "xfail.actual"
        actual[step] = _expectation(r, value, where, topologies[step], by_name)
    return ExpectedFailure(reason, actual=MappingProxyType(actual))


_TOP = [
    "name",
    "description",
    "tags",
    "xfail",
    "settings",
    "workloads",
    "namespaces",
    "external",
    "policies",
    "expect",
    "expect_when_enforced",
    "steps",
]
_STEP = ["name", "apply", "delete", "promote", "label_namespaces", "label_pods", "expect", "expect_when_enforced"]


def _refs(r: _Reader, raw: object, path: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    refs = r.each(raw, path, lambda d, p: r.string(d, p, f"the reference of {what}"))
    for j, ref in enumerate(refs):
        if ref not in known:
            raise r.fail(
                f"{path}[{j}]",
                f"no {what} {ref} is in force at this step",
                ("one of " + ", ".join(sorted(known))) if known else "(none applied yet)",
            )
    return refs


def _step_changes(r: _Reader, s: Mapping[Any, Any], sp: str, apply_path: str, scenario: Path, state: DesiredState) -> StepChanges:
    """A step's changes, checked against ``state``, the state in force before it."""
    topology = state.topology
    delete = _refs(r, s.get("delete", []), _join(sp, "delete"), state.refs, "policy")
    apply = _policies(r, s.get("apply", []), apply_path, scenario)
    known_ns = {ns.name for ns in topology.namespaces}
    versions = {p.api_version: p.ref for p in state.cluster_policy_list}
    for policy in apply:
        if isinstance(policy, ClusterPolicy):
            _check_api_versions(policy, versions)
            continue
        if policy.namespace is not None and policy.namespace not in known_ns:
            kind = "NetworkPolicy" if isinstance(policy, NetworkPolicy) else policy.kind.value
            raise PolicyError(
                policy.source,
                policy.ref,
                "metadata.namespace",
                f"namespace {policy.namespace!r} is not declared in the scenario",
                "one of " + ", ".join(sorted(known_ns)),
                kind,
            )
    staged_now = [object_ref(p) for p in apply if not isinstance(p, NetworkPolicy | ClusterPolicy)]
    staged_after = [*(k for k in state.staged if k not in delete), *staged_now]
    promote = _refs(r, s.get("promote", []), _join(sp, "promote"), staged_after, "staged policy")
    label_ns: dict[str, Mapping[str, str | None]] = {}
    for ns_name, changes in r.mapping(s.get("label_namespaces", {}), _join(sp, "label_namespaces")).items():
        lp = f"{_join(sp, 'label_namespaces')}.{ns_name}"
        if ns_name not in known_ns:
            raise r.fail(lp, f"namespace {ns_name!r} is not declared", "one of " + ", ".join(sorted(known_ns)))
        parsed = r.label_changes(changes, lp)
        if NAMESPACE_NAME_LABEL in parsed:
            raise r.fail(f"{lp}.{NAMESPACE_NAME_LABEL}", "this label is set by the API server and cannot change")
        label_ns[ns_name] = parsed
    label_pods: dict[str, Mapping[str, str | None]] = {}
    for pod_id, changes in r.mapping(s.get("label_pods", {}), _join(sp, "label_pods")).items():
        lp = f"{_join(sp, 'label_pods')}.{pod_id}"
        if not (isinstance(pod_id, str) and "/" in pod_id and topology.has_endpoint(pod_id)):
            raise r.fail(lp, f"pod {pod_id!r} is not declared", "namespace/pod of a declared pod")
        label_pods[pod_id] = r.label_changes(changes, lp)
    return StepChanges(apply, delete, label_ns, label_pods, promote)


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


def parse_scenario(doc: object, path: Path, files: FileSource | None = None) -> Scenario:
    """Validate a parsed scenario document (``path`` names it and anchors relative
    paths, read from ``files``: the working tree unless given) and plan its steps."""
    r = _Reader(str(path), files)
    top = r.mapping(
        doc,
        "",
        _TOP,
        ["description"] if "workloads" in (doc if isinstance(doc, Mapping) else {}) else ["description", "namespaces"],
    )
    name = top.get("name", path.stem.removesuffix(".scenario"))
    name = r.string(name, "name", "a scenario name such as default-deny")
    if not re.match(r"^[A-Za-z0-9][-A-Za-z0-9_.]*\Z", name):
        raise r.fail("name", f"{name!r} is not a valid scenario name", "letters, digits, '-', '_' and '.'")
    description = r.string(top["description"], "description", "a one-line description")
    tags = r.each(top.get("tags", []), "tags", lambda t, p: r.string(t, p, "a tag"))
    settings = _settings(r, top.get("settings"))
    workloads = read_workloads(top["workloads"], path, r.files) if "workloads" in top else None
    topology = _topology(r, top, workloads)
    names = settings.probe_names
    if names and topology.services and dns_pod(topology.pods) is None:
        raise r.fail(
            "settings.probe_names",
            "names are resolved by the cluster DNS, and no pod of kube-system labelled k8s-app: kube-dns serves 53/UDP",
            "a pod such as namespaces.kube-system.pods.coredns with labels {k8s-app: kube-dns} and ports [53/UDP, 53/TCP]",
        )
    several = "steps" in top
    if several:
        for key in ("policies", "expect", "expect_when_enforced"):
            if key in top:
                raise r.fail(
                    key,
                    f"a scenario with steps declares policies and {key if key != 'policies' else 'expect'} inside its steps",
                    "either policies + expect, or steps",
                )
        raw_steps = r.seq(top["steps"], "steps")
        if not raw_steps:
            raise r.fail("steps", "empty list", "at least one step")
    else:
        if "expect" not in top:
            raise r.fail("expect", "required field is missing", "the intended reachability (rules, matrix or model)")
        single: dict[str, Any] = {"name": "main", "apply": top.get("policies", []), "expect": top["expect"]}
        if "expect_when_enforced" in top:
            single["expect_when_enforced"] = top["expect_when_enforced"]
        raw_steps = [single]
    steps = []
    state = DesiredState(topology)
    step_names: set[str] = set()
    in_force: list[tuple[str, Mapping[Any, Any], Topology]] = []
    for i, raw_step in enumerate(raw_steps):
        sp = f"steps[{i}]" if several else ""
        s = r.mapping(raw_step, sp, _STEP, ["expect"])
        step_name = r.string(s.get("name", f"step-{i + 1}"), _join(sp, "name"), "a step name")
        if step_name in step_names:
            raise r.fail(_join(sp, "name"), f"step name {step_name!r} is used twice")
        step_names.add(step_name)
        apply_path = _join(sp, "apply") if several else "policies"
        changes = _step_changes(r, s, sp, apply_path, path, state)
        state = state.after(changes)
        expect = _expectation(r, s["expect"], _join(sp, "expect"), state.topology, names)
        when_enforced = None
        if "expect_when_enforced" in s:
            where = _join(sp, "expect_when_enforced")
            if not state.staged:
                raise r.fail(where, "no staged policy is in force at this step", "staged policies whose enforcement it describes")
            when_enforced = _expectation(r, s["expect_when_enforced"], where, state.when_enforced().topology, names)
        steps.append(Step(step_name, expect, changes, when_enforced))
        in_force.append((step_name, s, state.topology))
    xfail = _xfail(r, top["xfail"], in_force, several, names) if "xfail" in top else None
    notes = workloads.notes if workloads is not None else ()
    scenario = Scenario(name, description, path, topology, tuple(steps), settings, tags, xfail, notes=notes)
    return replace(scenario, plans=plan_steps(scenario))


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


def load_scenario(path: Path | str, files: FileSource | None = None) -> Scenario:
    """The scenario at ``path`` and the files it refers to, read from ``files``: the
    working tree unless given (a :class:`~harness.scenario.sources.GitRevision`
    reads them as they are at a revision)."""
    path = Path(path)
    files = files if files is not None else WorkingTree(MAX_FILE_BYTES)
    source = files.display(path)
    doc = load_one(files.read_text(path), source)
    if doc is None:
        raise ScenarioError(source, "", "the file is empty", "a scenario mapping (see docs/scenario-format.md)")
    return parse_scenario(doc, path, files)
