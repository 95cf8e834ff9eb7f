"""NetworkPolicy (networking.k8s.io/v1) as typed, validated, immutable objects.

``parse_policy`` accepts exactly what the API server accepts and rejects the rest
with a :class:`PolicyError` naming the policy and the field. The parsed object keeps
its original manifest so cluster backends apply what the user wrote, byte for byte.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.core.errors import PolicyError
from harness.core.metadata import check_metadata
from harness.core.selectors import LabelSelector, SelectorSyntaxError, parse_selector
from harness.core.topology import PORT_NAME_FORM, Protocol, check_port_name, is_dns_label, is_dns_subdomain

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PolicyType(enum.Enum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


@dataclass(frozen=True)
class IPBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, ip: IPAddress) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in ex for ex in self.excepts if ex.version == ip.version)


@dataclass(frozen=True)
class Peer:
    """One entry of ``from``/``to``.

    Exactly one of the forms is used: selectors (either or both; both set means
    *pods matching podSelector in namespaces matching namespaceSelector*), or ipBlock.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    """One entry of ``ports``. ``port`` None means every port of ``protocol``."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule. Empty ``peers`` (absent or ``[]``) means every
    peer; empty ``ports`` means every port and protocol."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[PolicyType]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    source: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class _Context:
    """Where in which manifest we are, for error messages."""

    def __init__(self, source: str, policy: str) -> None:
        self.source = source
        self.policy = policy

    def fail(self, path: str, message: str, expected: str = "") -> PolicyError:
        return PolicyError(self.source, self.policy, path, message, expected)


def _mapping(ctx: _Context, raw: object, path: str, allowed: set[str]) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ctx.fail(path, f"got {type(raw).__name__}", "a mapping")
    for key in raw:
        if key not in allowed:
            raise ctx.fail(f"{path}.{key}" if path else str(key), "unknown field", " or ".join(sorted(allowed)))
    return raw


def _list(ctx: _Context, raw: object, path: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.fail(path, f"got {type(raw).__name__}", "a list")
    return raw


def _selector(ctx: _Context, raw: object, path: str) -> LabelSelector:
    try:
        return parse_selector(raw)
    except SelectorSyntaxError as err:
        raise ctx.fail(f"{path}.{err.field}" if err.field else path, err.message, err.expected) from None


def _network(ctx: _Context, raw: object, path: str) -> IPNetwork:
    if not isinstance(raw, str):
        raise ctx.fail(path, f"got {raw!r}", "a CIDR such as 10.0.0.0/8")
    try:
        # Host bits are accepted, as Go's net.ParseCIDR does.
        return ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise ctx.fail(path, f"{raw!r} is not a CIDR", "a CIDR such as 10.0.0.0/8 or fd00::/64") from None


def _ip_block(ctx: _Context, raw: object, path: str) -> IPBlock:
    raw = _mapping(ctx, raw, path, {"cidr", "except"})
    if "cidr" not in raw:
        raise ctx.fail(f"{path}.cidr", "required field is missing", "a CIDR such as 10.0.0.0/8")
    cidr = _network(ctx, raw["cidr"], f"{path}.cidr")
    excepts = []
    for i, item in enumerate(_list(ctx, raw.get("except"), f"{path}.except")):
        ex = _network(ctx, item, f"{path}.except[{i}]")
        if ex.version != cidr.version or not ex.subnet_of(cidr) or ex.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            raise ctx.fail(
                f"{path}.except[{i}]", f"{ex} is not a strict subset of cidr {cidr}", "a CIDR inside cidr and smaller than it"
            )
        excepts.append(ex)
    return IPBlock(cidr, tuple(excepts))


def _peer(ctx: _Context, raw: object, path: str) -> Peer:
    raw = _mapping(ctx, raw, path, {"podSelector", "namespaceSelector", "ipBlock"})
    # The API server reads an explicit null as an absent field.
    raw = {key: value for key, value in raw.items() if value is not None}
    if not raw:
        raise ctx.fail(path, "a peer must set podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in raw:
        if "podSelector" in raw or "namespaceSelector" in raw:
            raise ctx.fail(
                path, "ipBlock cannot be combined with podSelector or namespaceSelector", "either ipBlock alone or selectors"
            )
        return Peer(ip_block=_ip_block(ctx, raw["ipBlock"], f"{path}.ipBlock"))
    pod = _selector(ctx, raw["podSelector"], f"{path}.podSelector") if "podSelector" in raw else None
    ns = _selector(ctx, raw["namespaceSelector"], f"{path}.namespaceSelector") if "namespaceSelector" in raw else None
    return Peer(pod_selector=pod, namespace_selector=ns)


def _port(ctx: _Context, raw: object, path: str) -> PolicyPort:
    raw = _mapping(ctx, raw, path, {"protocol", "port", "endPort"})
    proto_raw = raw.get("protocol", "TCP")
    try:
        protocol = Protocol(proto_raw)
    except ValueError:
        raise ctx.fail(f"{path}.protocol", f"unsupported protocol {proto_raw!r}", "TCP, UDP or SCTP") from None
    port = raw.get("port")
    if isinstance(port, bool) or (port is not None and not isinstance(port, int | str)):
        raise ctx.fail(f"{path}.port", f"got {port!r}", "a port number 1-65535 or a port name")
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise ctx.fail(f"{path}.port", f"{port} is outside 1-65535", "a port number 1-65535 or a port name")
    elif isinstance(port, str):
        problem = check_port_name(port)
        if problem:
            raise ctx.fail(f"{path}.port", problem, f"a number, or {PORT_NAME_FORM}")
    end = raw.get("endPort")
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            raise ctx.fail(f"{path}.endPort", f"got {end!r}", "a port number")
        if port is None:
            raise ctx.fail(f"{path}.endPort", "endPort requires port", "port set to the first number of the range")
        if not isinstance(port, int):
            raise ctx.fail(f"{path}.endPort", "endPort cannot be used with a named port", "a numeric port")
        if end < port:
            raise ctx.fail(f"{path}.endPort", f"endPort {end} is smaller than port {port}", f"a number from {port} to 65535")
        if end > 65535:
            raise ctx.fail(f"{path}.endPort", f"{end} is outside 1-65535", "a number up to 65535")
    return PolicyPort(protocol, port, end)


def _rules(ctx: _Context, raw: object, path: str, peer_key: str) -> tuple[Rule, ...]:
    rules = []
    for i, item in enumerate(_list(ctx, raw, path)):
        where = f"{path}[{i}]"
        item = _mapping(ctx, item, where, {peer_key, "ports"})
        peers = tuple(
            _peer(ctx, p, f"{where}.{peer_key}[{j}]") for j, p in enumerate(_list(ctx, item.get(peer_key), f"{where}.{peer_key}"))
        )
        ports = tuple(_port(ctx, p, f"{where}.ports[{j}]") for j, p in enumerate(_list(ctx, item.get("ports"), f"{where}.ports")))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def parse_policy(manifest: object, source: str = "<inline>", default_namespace: str | None = None) -> NetworkPolicy:
    """Validate one NetworkPolicy manifest and return it typed.

    ``default_namespace`` plays the part of ``kubectl apply -n``: it is used when the
    manifest has no ``metadata.namespace``.
    """
    name_hint = "<unnamed>"
    if isinstance(manifest, Mapping):
        meta = manifest.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            name_hint = meta["name"]
    ctx = _Context(source, name_hint)
    manifest = _mapping(ctx, manifest, "", {"apiVersion", "kind", "metadata", "spec", "status"})
    if manifest.get("apiVersion") != "networking.k8s.io/v1":
        raise ctx.fail("apiVersion", f"got {manifest.get('apiVersion')!r}", "networking.k8s.io/v1")
    if manifest.get("kind") != "NetworkPolicy":
        raise ctx.fail("kind", f"got {manifest.get('kind')!r}", "NetworkPolicy")
    meta = manifest.get("metadata")
    if not isinstance(meta, Mapping):
        raise ctx.fail("metadata", "required field is missing", "a mapping with name (and namespace)")
    name = meta.get("name")
    if not is_dns_subdomain(name):
        raise ctx.fail("metadata.name", f"{name!r} is not a valid name", "a lowercase DNS subdomain such as allow-db")
    namespace = meta.get("namespace", default_namespace)
    if namespace is None:
        raise ctx.fail(
            "metadata.namespace", "no namespace given", "metadata.namespace, or namespace: next to the policy in the scenario"
        )
    if not is_dns_label(namespace):
        raise ctx.fail("metadata.namespace", f"{namespace!r} is not a valid namespace name", "a lowercase DNS label")
    ctx.policy = f"{namespace}/{name}"
    check_metadata(meta, ctx.fail)
    spec = _mapping(ctx, manifest.get("spec"), "spec", {"podSelector", "policyTypes", "ingress", "egress"})
    pod_selector = _selector(ctx, spec.get("podSelector"), "spec.podSelector")
    ingress = _rules(ctx, spec.get("ingress"), "spec.ingress", "from")
    egress = _rules(ctx, spec.get("egress"), "spec.egress", "to")
    types_raw = spec.get("policyTypes")
    if types_raw is None or types_raw == []:
        # API server defaulting, also for []: Ingress always, Egress when egress rules exist.
        types = {PolicyType.INGRESS} | ({PolicyType.EGRESS} if egress else set())
    else:
        items = _list(ctx, types_raw, "spec.policyTypes")
        if len(items) > 2:
            raise ctx.fail("spec.policyTypes", f"{len(items)} entries", "at most Ingress and Egress")
        types = set()
        for i, item in enumerate(items):
            try:
                types.add(PolicyType(item))
            except ValueError:
                raise ctx.fail(f"spec.policyTypes[{i}]", f"unknown policy type {item!r}", "Ingress or Egress") from None
    full = dict(manifest)
    full["metadata"] = {**meta, "namespace": namespace}
    return NetworkPolicy(
        namespace=namespace,
        name=name,
        pod_selector=pod_selector,
        policy_types=frozenset(types),
        ingress=ingress,
        egress=egress,
        source=source,
        manifest=full,
    )
