"""Calico's staged policies (``projectcalico.org/v3``), parsed and validated.

Calico (open source from v3.30) stores three kinds that it never enforces: Felix
programs no rule for them and lets an all-staged tier end in a pass, not a drop
(projectcalico/calico ``felix/rules/endpoints.go``); they only show up as "pending"
verdicts in flow logs. docs/staged-policies.md has the facts and their sources.

* ``StagedKubernetesNetworkPolicy`` wraps a Kubernetes NetworkPolicy spec; enforcing it
  applies the ``networking.k8s.io/v1`` NetworkPolicy of the same namespace and name.
* ``StagedNetworkPolicy`` and ``StagedGlobalNetworkPolicy`` hold Calico's own spec;
  enforcing them applies the ``projectcalico.org/v3`` NetworkPolicy or
  GlobalNetworkPolicy of the same name, a different object from any Kubernetes
  NetworkPolicy.
* ``spec.stagedAction: Delete`` (the default is ``Set``) stages the removal of that
  enforced policy; Calico requires the rest of its spec to be empty.

The harness accepts the part of Calico's spec that stages what a NetworkPolicy can
express: the default tier, rules whose action is ``Allow``, source/destination
``selector``, ``namespaceSelector``, ``nets``/``notNets`` (not together with a
selector), destination ``ports`` and ``protocol`` TCP, UDP or SCTP. With Allow rules
only, in one tier, a Calico policy means what a NetworkPolicy means: a selected
endpoint is isolated in the policy's directions and admits what any rule of any
selecting policy admits, whatever the ``order``. Everything else is rejected with a
:class:`PolicyError` naming the file, the policy and the field.
"""

from __future__ import annotations

import copy
import enum
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness.core.calico.labels import ENDPOINT_NAMESPACE_KEYS, NAMESPACE_NAME_KEYS, endpoint_selector
from harness.core.calico.selector import (
    All,
    CalicoSelector,
    CalicoSelectorError,
    Global,
    NotExpressible,
    parse_calico_selector,
    to_requirements,
)
from harness.core.errors import HarnessError, PolicyError
from harness.core.metadata import check_metadata
from harness.core.policy import IPNetwork, NetworkPolicy, PolicyPort, PolicyType, parse_policy
from harness.core.topology import PORT_NAME_FORM, Protocol, check_port_name, is_dns_label, is_dns_subdomain

CALICO_API_VERSION = "projectcalico.org/v3"
KUBERNETES_API_VERSION = "networking.k8s.io/v1"

# Calico's policy name format without the tier prefix (validator.go nameLabelFmt).
_CALICO_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_MAX_NAME = 253


class StagedKind(enum.Enum):
    STAGED_NETWORK_POLICY = "StagedNetworkPolicy"
    STAGED_GLOBAL_NETWORK_POLICY = "StagedGlobalNetworkPolicy"
    STAGED_KUBERNETES_NETWORK_POLICY = "StagedKubernetesNetworkPolicy"

    @property
    def enforced(self) -> EnforcedKind:
        return _ENFORCED_BY_STAGED[self]

    @property
    def is_global(self) -> bool:
        return self is StagedKind.STAGED_GLOBAL_NETWORK_POLICY


STAGED_KINDS = frozenset(k.value for k in StagedKind)


class EnforcedKind(enum.Enum):
    """The enforced object a staged policy sets or deletes."""

    KUBERNETES_NETWORK_POLICY = "NetworkPolicy"
    CALICO_NETWORK_POLICY = "projectcalico.org/v3 NetworkPolicy"
    CALICO_GLOBAL_NETWORK_POLICY = "GlobalNetworkPolicy"

    @property
    def api_version(self) -> str:
        return KUBERNETES_API_VERSION if self is EnforcedKind.KUBERNETES_NETWORK_POLICY else CALICO_API_VERSION

    @property
    def kind(self) -> str:
        return "GlobalNetworkPolicy" if self is EnforcedKind.CALICO_GLOBAL_NETWORK_POLICY else "NetworkPolicy"


_ENFORCED_BY_STAGED = {
    StagedKind.STAGED_NETWORK_POLICY: EnforcedKind.CALICO_NETWORK_POLICY,
    StagedKind.STAGED_GLOBAL_NETWORK_POLICY: EnforcedKind.CALICO_GLOBAL_NETWORK_POLICY,
    StagedKind.STAGED_KUBERNETES_NETWORK_POLICY: EnforcedKind.KUBERNETES_NETWORK_POLICY,
}


class StagedAction(enum.Enum):
    SET = "Set"
    DELETE = "Delete"


@dataclass(frozen=True)
class PolicyKey:
    """Which enforced object: kind, namespace (None for a global policy) and name."""

    kind: EnforcedKind
    namespace: str | None
    name: str

    @property
    def ref(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"

    def sort_key(self) -> tuple[str, str, str]:
        return (self.kind.value, self.namespace or "", self.name)

    def __str__(self) -> str:
        return f"{self.kind.value} {self.ref}"


# -- Calico's spec, the accepted part ------------------------------------------------


@dataclass(frozen=True)
class CalicoPort:
    """A destination port: one number, a ``first:last`` range, or a named port."""

    first: int | None = None
    last: int | None = None
    name: str | None = None

    def to_policy_port(self, protocol: Protocol) -> PolicyPort:
        if self.name is not None:
            return PolicyPort(protocol, self.name)
        end = self.last if self.last != self.first else None
        return PolicyPort(protocol, self.first, end)


@dataclass(frozen=True)
class EntityMatch:
    """The peer side of a rule (the source of an ingress rule, the destination of an
    egress one). ``selector`` None means the field was absent or ``""``, which Calico
    reads differently from ``all()``: no selector matches every address."""

    selector: CalicoSelector | None = None
    namespace_selector: CalicoSelector | None = None
    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class CalicoRule:
    """An Allow rule; ``protocol`` None is every protocol."""

    peer: EntityMatch = EntityMatch()
    protocol: Protocol | None = None
    ports: tuple[CalicoPort, ...] = ()


@dataclass(frozen=True)
class CalicoPolicy:
    """An enforced ``projectcalico.org/v3`` NetworkPolicy or GlobalNetworkPolicy."""

    key: PolicyKey
    selector: CalicoSelector
    types: frozenset[PolicyType]
    ingress: tuple[CalicoRule, ...] = ()
    egress: tuple[CalicoRule, ...] = ()
    namespace_selector: CalicoSelector | None = None  # GlobalNetworkPolicy only
    order: float | None = None
    source: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return self.key.ref


@dataclass(frozen=True)
class StagedPolicy:
    """A staged policy as written, and the enforced policy it stands for.

    ``enforced`` is what enforcing a ``Set`` applies (a NetworkPolicy for a
    StagedKubernetesNetworkPolicy, a :class:`CalicoPolicy` otherwise); None for a
    ``Delete``. ``manifest`` is the staged object, for cluster backends to apply."""

    kind: StagedKind
    namespace: str | None
    name: str
    action: StagedAction
    enforced: NetworkPolicy | CalicoPolicy | None
    source: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"

    @property
    def target(self) -> PolicyKey:
        return PolicyKey(self.kind.enforced, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.kind.value} {self.ref}"

    def enforced_manifest(self) -> dict[str, Any] | None:
        """The object a team applies to enforce this policy (Calico's
        ConvertStaged*ToEnforced: same metadata, the spec without stagedAction), or
        None for a Delete, which is enforced by deleting :attr:`target`."""
        if self.enforced is None:
            return None
        return copy.deepcopy(dict(self.enforced.manifest))


# -- reading -------------------------------------------------------------------------


class _Fields:
    """Typed access to one manifest, failing with the field path."""

    def __init__(self, source: str, kind: str, policy: str) -> None:
        self.source = source
        self.kind = kind
        self.policy = policy

    def fail(self, path: str, message: str, expected: str = "") -> PolicyError:
        return PolicyError(self.source, self.policy, path, message, expected, kind=self.kind)

    def mapping(
        self, raw: object, path: str, known: Iterable[str], unsupported: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        """``unsupported``: fields Calico has and the harness rejects, with why."""
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"got {type(raw).__name__}", "a mapping")
        allowed = set(known)
        unsupported = unsupported or {}
        for key in raw:
            where = f"{path}.{key}" if path else str(key)
            if key in unsupported:
                raise self.fail(where, f"{key} is not supported by the harness: {unsupported[key]}")
            if key not in allowed:
                raise self.fail(where, "unknown field", "one of " + ", ".join(sorted(allowed | set(unsupported))))
        return raw

    def seq(self, raw: object, path: str) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.fail(path, f"got {type(raw).__name__}", "a list")
        return raw

    def selector(self, raw: object, path: str, *, optional: bool = False) -> CalicoSelector | None:
        if optional and (raw is None or raw == ""):
            return None
        try:
            selector = parse_calico_selector(raw)
        except CalicoSelectorError as err:
            raise self.fail(path, f"invalid selector: {err}", "a Calico selector such as app == 'db' && has(tier)") from None
        if selector.uses(Global):
            raise self.fail(
                path,
                "global() selects GlobalNetworkSets and host endpoints, which a scenario cannot declare",
                "a selector of pods or namespaces",
            )
        try:
            to_requirements(selector)
        except NotExpressible as err:
            raise self.fail(
                path, f"the harness cannot model this selector: {err}", "==, !=, in, not in, has(), !, &&, ||"
            ) from None
        return selector

    def network(self, raw: object, path: str) -> IPNetwork:
        if not isinstance(raw, str):
            raise self.fail(path, f"got {raw!r}", "a CIDR such as 10.0.0.0/8 or an address")
        try:
            return ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise self.fail(path, f"{raw!r} is not a CIDR", "a CIDR such as 10.0.0.0/8 or an address") from None


_RULE_UNSUPPORTED = {
    "ipVersion": "the harness's networks are IPv4; leave it out",
    "icmp": "the harness probes TCP, UDP and SCTP only",
    "notICMP": "the harness probes TCP, UDP and SCTP only",
    "notProtocol": "a NetworkPolicy cannot express a negated protocol",
    "http": "HTTP matching needs Calico's application layer policy, which a NetworkPolicy cannot express",
}
_ENTITY_UNSUPPORTED = {
    "notSelector": "a NetworkPolicy cannot express a negated selector; negate inside selector instead",
    "notPorts": "a NetworkPolicy cannot express negated ports",
    "serviceAccounts": "the harness's pods run as their namespace's default service account only",
    "services": "the harness declares no Kubernetes Services",
}
_SPEC_UNSUPPORTED = {
    "serviceAccountSelector": "the harness's pods run as their namespace's default service account only",
}
_GLOBAL_FLAGS = {
    "doNotTrack": "untracked policy applies to host endpoints only",
    "preDNAT": "pre-DNAT policy applies to host endpoints only",
    "applyOnForward": "forwarded traffic concerns host endpoints only",
}
_PROTOCOL_NUMBERS = {6: Protocol.TCP, 17: Protocol.UDP, 132: Protocol.SCTP}
_PORT_RANGE = re.compile(r"^(\d+):(\d+)\Z")


def _protocol(f: _Fields, raw: object, path: str) -> Protocol:
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)  # Calico reads a numeric string as a protocol number
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw in _PROTOCOL_NUMBERS:
            return _PROTOCOL_NUMBERS[raw]
        if 1 <= raw <= 255:
            raise f.fail(path, f"protocol {raw} is not supported by the harness", "TCP, UDP or SCTP (6, 17 or 132)")
        raise f.fail(path, f"protocol number {raw} is outside 1-255", "TCP, UDP or SCTP")
    if raw in ("TCP", "UDP", "SCTP"):
        return Protocol(raw)
    if raw in ("ICMP", "ICMPv6", "UDPLite"):
        raise f.fail(path, f"protocol {raw} is not supported by the harness", "TCP, UDP or SCTP")
    raise f.fail(path, f"unknown protocol {raw!r}", "TCP, UDP or SCTP (Calico's names are case-sensitive)")


def _port(f: _Fields, raw: object, path: str) -> CalicoPort:
    expected = "a port number, a range such as 8000:8100, or a port name"
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw:
        raise f.fail(path, f"got {raw!r}", expected)
    numbers: tuple[int, int] | None = None
    if raw.isdigit():
        numbers = (int(raw), int(raw))
    elif (m := _PORT_RANGE.match(raw)) is not None:
        numbers = (int(m.group(1)), int(m.group(2)))
    if numbers is None:
        problem = check_port_name(raw)
        if problem:
            raise f.fail(path, problem, f"a number, a range such as 8000:8100, or {PORT_NAME_FORM}")
        return CalicoPort(name=raw)
    first, last = numbers
    for n in numbers:
        if not 1 <= n <= 65535:
            raise f.fail(path, f"port {n} is outside 1-65535", expected)
    if first > last:
        raise f.fail(path, f"range {raw} starts above its end", "a range first:last with first <= last")
    return CalicoPort(first, last)


def _entity(f: _Fields, raw: object, path: str, side: str, direction: str) -> tuple[EntityMatch, tuple[CalicoPort, ...]]:
    """A rule's ``source`` or ``destination`` (``side``). The peer side is the other end
    of the connection: the source of an ingress rule, the destination of an egress one."""
    doc = f.mapping(raw, path, ["selector", "namespaceSelector", "nets", "notNets", "ports"], _ENTITY_UNSUPPORTED)
    if (side == "source") != (direction == "ingress"):
        for key in ("selector", "namespaceSelector", "nets", "notNets"):
            if key in doc:
                raise f.fail(
                    f"{path}.{key}",
                    f"on an {direction} rule the {side} is the selected pod, which spec.selector chooses",
                    "only ports here" if side == "destination" else "no source fields on an egress rule",
                )
    ports = tuple(_port(f, p, f"{path}.ports[{i}]") for i, p in enumerate(f.seq(doc.get("ports"), f"{path}.ports")))
    if ports and side == "source":
        raise f.fail(f"{path}.ports", "source ports cannot be expressed by a NetworkPolicy", "destination.ports")
    selector = f.selector(doc.get("selector"), f"{path}.selector", optional=True)
    namespace_selector = f.selector(doc.get("namespaceSelector"), f"{path}.namespaceSelector", optional=True)
    nets = tuple(f.network(n, f"{path}.nets[{i}]") for i, n in enumerate(f.seq(doc.get("nets"), f"{path}.nets")))
    not_nets = tuple(f.network(n, f"{path}.notNets[{i}]") for i, n in enumerate(f.seq(doc.get("notNets"), f"{path}.notNets")))
    if (nets or not_nets) and (selector is not None or namespace_selector is not None):
        raise f.fail(
            path,
            "nets or notNets together with a selector match pods by label and address at once, which a NetworkPolicy "
            "cannot express",
            "either selectors or nets/notNets",
        )
    if len({n.version for n in nets + not_nets}) > 1:
        raise f.fail(path, "the rule mixes IPv4 and IPv6 CIDRs, which Calico rejects", "CIDRs of one IP version")
    for i, net in enumerate(not_nets):
        if net.prefixlen == 0:
            raise f.fail(f"{path}.notNets[{i}]", f"{net} in a negation matches no traffic, which Calico rejects")
    return EntityMatch(selector, namespace_selector, nets, not_nets), ports


def _expressible(
    f: _Fields, path: str, selector: CalicoSelector | None, namespace_selector: CalicoSelector | None, namespace: str | None
) -> None:
    """The whole selector Calico builds from these fields must expand into few enough
    alternatives for the model's translation."""
    root = selector.root if selector is not None else All()
    ns_root = namespace_selector.root if namespace_selector is not None else None
    try:
        to_requirements(endpoint_selector(root, ns_root, namespace))
    except NotExpressible as err:
        raise f.fail(path, f"the harness cannot model these selectors together: {err}", "simpler selectors") from None


def _rule(f: _Fields, raw: object, path: str, direction: str, namespace: str | None) -> CalicoRule:
    doc = f.mapping(raw, path, ["action", "protocol", "source", "destination", "metadata"], _RULE_UNSUPPORTED)
    action = doc.get("action")
    if action != "Allow":
        if action in ("Deny", "Pass", "Log"):
            raise f.fail(
                f"{path}.action",
                f"action {action} is not supported by the harness: with Allow rules only, a Calico policy means what "
                "a NetworkPolicy means whatever its order",
                "Allow",
            )
        raise f.fail(f"{path}.action", f"got {action!r}", "Allow")
    protocol = _protocol(f, doc["protocol"], f"{path}.protocol") if doc.get("protocol") is not None else None
    source, _ = _entity(f, doc.get("source"), f"{path}.source", "source", direction)
    destination, ports = _entity(f, doc.get("destination"), f"{path}.destination", "destination", direction)
    if ports and protocol is None:
        raise f.fail(f"{path}.protocol", "ports need a protocol", "TCP, UDP or SCTP")
    peer, peer_path = (source, f"{path}.source") if direction == "ingress" else (destination, f"{path}.destination")
    if peer.selector is not None or peer.namespace_selector is not None:
        _expressible(f, peer_path, peer.selector, peer.namespace_selector, namespace)
    return CalicoRule(peer, protocol, ports)


def _types(f: _Fields, raw: object, ingress: bool, egress: bool) -> frozenset[PolicyType]:
    if raw is None or raw == []:
        # Calico's defaulting (api/pkg/defaults/networkpolicy.go): egress rules only
        # give [Egress]; otherwise Ingress, plus Egress when both kinds are present.
        if egress and not ingress:
            return frozenset({PolicyType.EGRESS})
        return frozenset({PolicyType.INGRESS, PolicyType.EGRESS} if egress else {PolicyType.INGRESS})
    items = f.seq(raw, "spec.types")
    types: set[PolicyType] = set()
    for i, item in enumerate(items):
        try:
            value = PolicyType(item)
        except ValueError:
            raise f.fail(f"spec.types[{i}]", f"unknown type {item!r}", "Ingress or Egress") from None
        if value in types:
            raise f.fail(f"spec.types[{i}]", f"{item} is given twice")
        types.add(value)
    return frozenset(types)


def _tier(f: _Fields, spec: Mapping[str, Any]) -> None:
    tier = spec.get("tier")
    if tier not in (None, "", "default"):
        raise f.fail(
            "spec.tier",
            f"tier {tier!r} is not supported by the harness: Kubernetes NetworkPolicies live in the default tier, and "
            "another tier's allow or end-of-tier drop would decide before them",
            "default",
        )


def _metadata(f: _Fields, manifest: Mapping[str, Any], kind: StagedKind, default_namespace: str | None) -> tuple[str | None, str]:
    meta = manifest.get("metadata")
    if not isinstance(meta, Mapping):
        raise f.fail("metadata", "required field is missing", "a mapping with name (and namespace)")
    name = meta.get("name")
    if kind is StagedKind.STAGED_KUBERNETES_NETWORK_POLICY:
        if not is_dns_subdomain(name):
            raise f.fail("metadata.name", f"{name!r} is not a valid name", "a lowercase DNS subdomain such as allow-db")
    elif not isinstance(name, str) or len(name) > _MAX_NAME or not _CALICO_NAME.match(name):
        hint = " (a tier prefix such as default. is not supported: Calico reads it differently before and after v3.32)"
        raise f.fail(
            "metadata.name",
            f"{name!r} is not a valid name" + (hint if isinstance(name, str) and "." in name else ""),
            "lowercase letters, digits and '-', such as allow-db",
        )
    check_metadata(meta, f.fail)
    if kind.is_global:
        if meta.get("namespace") is not None:
            raise f.fail("metadata.namespace", "a StagedGlobalNetworkPolicy has no namespace", "no metadata.namespace")
        return None, str(name)
    namespace = meta.get("namespace", default_namespace)
    if namespace is None:
        raise f.fail(
            "metadata.namespace", "no namespace given", "metadata.namespace, or namespace: next to the policy in the scenario"
        )
    if not is_dns_label(namespace):
        raise f.fail("metadata.namespace", f"{namespace!r} is not a valid namespace name", "a lowercase DNS label")
    return namespace, str(name)


def _enforced_metadata(meta: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    # As ConvertStaged*ToEnforced: the staged object's metadata, without the fields
    # the server owns.
    out = {k: v for k, v in meta.items() if k in ("name", "labels", "annotations")}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def _staged_kubernetes(
    f: _Fields, manifest: Mapping[str, Any], spec: Mapping[str, Any], action: StagedAction, namespace: str | None, source: str
) -> NetworkPolicy | None:
    if action is StagedAction.DELETE:
        for key, value in spec.items():
            if key != "stagedAction" and not (key == "podSelector" and value in (None, {})):
                raise f.fail(
                    f"spec.{key}", "a staged Delete takes no other field (Calico requires the rest of the spec to be empty)"
                )
        return None
    enforced = {
        "apiVersion": KUBERNETES_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": _enforced_metadata(manifest["metadata"], namespace),
        "spec": {k: v for k, v in spec.items() if k != "stagedAction"},
    }
    try:
        return parse_policy(enforced, source, namespace)
    except PolicyError as err:
        raise f.fail(err.field, err.detail, err.expected) from None


def _staged_calico(
    f: _Fields,
    manifest: Mapping[str, Any],
    spec: Mapping[str, Any],
    kind: StagedKind,
    action: StagedAction,
    namespace: str | None,
    name: str,
    source: str,
) -> CalicoPolicy | None:
    known = ["stagedAction", "tier", "order", "selector", "types", "ingress", "egress", "performanceHints", *_SPEC_UNSUPPORTED]
    global_only = ("namespaceSelector", *_GLOBAL_FLAGS)
    if kind.is_global:
        known += global_only
    f.mapping(spec, "spec", known, {k: "it exists on StagedGlobalNetworkPolicy only" for k in global_only if k not in known})
    for key, why in _SPEC_UNSUPPORTED.items():
        if spec.get(key) not in (None, ""):
            raise f.fail(f"spec.{key}", f"{key} is not supported by the harness: {why}")
    _tier(f, spec)
    if action is StagedAction.DELETE:
        for key in spec:
            if key not in ("stagedAction", "tier"):
                raise f.fail(
                    f"spec.{key}",
                    "a staged Delete takes no other field than tier (Calico requires the rest of the spec to be empty)",
                )
        return None
    for flag, why in _GLOBAL_FLAGS.items():
        if kind.is_global and spec.get(flag) not in (None, False):
            raise f.fail(f"spec.{flag}", f"{flag} is not supported by the harness: {why}", "false or absent")
    order = spec.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
        raise f.fail("spec.order", f"got {order!r}", "a number")
    hints = f.seq(spec.get("performanceHints"), "spec.performanceHints")
    for i, hint in enumerate(hints):
        if hint != "AssumeNeededOnEveryNode":
            raise f.fail(f"spec.performanceHints[{i}]", f"unknown hint {hint!r}", "AssumeNeededOnEveryNode")
    selector = f.selector(spec.get("selector"), "spec.selector")
    assert selector is not None
    namespace_selector = f.selector(spec.get("namespaceSelector"), "spec.namespaceSelector", optional=True)
    _expressible(f, "spec.selector", selector, namespace_selector, namespace)
    ingress = tuple(
        _rule(f, r, f"spec.ingress[{i}]", "ingress", namespace) for i, r in enumerate(f.seq(spec.get("ingress"), "spec.ingress"))
    )
    egress = tuple(
        _rule(f, r, f"spec.egress[{i}]", "egress", namespace) for i, r in enumerate(f.seq(spec.get("egress"), "spec.egress"))
    )
    types = _types(f, spec.get("types"), bool(ingress), bool(egress))
    enforced_kind = kind.enforced
    enforced = {
        "apiVersion": CALICO_API_VERSION,
        "kind": enforced_kind.kind,
        "metadata": _enforced_metadata(manifest["metadata"], namespace),
        "spec": {k: v for k, v in spec.items() if k != "stagedAction"},
    }
    return CalicoPolicy(
        key=PolicyKey(enforced_kind, namespace, name),
        selector=selector,
        types=types,
        ingress=ingress,
        egress=egress,
        namespace_selector=namespace_selector,
        order=float(order) if order is not None else None,
        source=source,
        manifest=MappingProxyType(enforced),
    )


def _staged_kind(manifest: object) -> str | None:
    """The manifest's ``kind`` when it is one of the staged kinds (a kind that is
    not a string, a list say, is none of them)."""
    kind = manifest.get("kind") if isinstance(manifest, Mapping) else None
    return kind if isinstance(kind, str) and kind in STAGED_KINDS else None


def is_staged(manifest: object) -> bool:
    """Whether a manifest claims to be one of the staged kinds (to route it to
    :func:`parse_staged_policy`)."""
    return _staged_kind(manifest) is not None


def parse_staged_policy(manifest: object, source: str = "<inline>", default_namespace: str | None = None) -> StagedPolicy:
    """Validate one staged policy manifest. ``default_namespace`` plays the part of
    ``kubectl apply -n`` for namespaced kinds without ``metadata.namespace``."""
    name_hint = "<unnamed>"
    kind_hint = "staged policy"
    if isinstance(manifest, Mapping):
        meta = manifest.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            name_hint = meta["name"]
        kind_hint = _staged_kind(manifest) or kind_hint
    f = _Fields(source, kind_hint, name_hint)
    doc = f.mapping(manifest, "", ["apiVersion", "kind", "metadata", "spec"])
    if _staged_kind(doc) is None:
        raise f.fail("kind", f"got {doc.get('kind')!r}", " or ".join(k.value for k in StagedKind))
    kind = StagedKind(doc["kind"])
    if doc.get("apiVersion") != CALICO_API_VERSION:
        raise f.fail("apiVersion", f"got {doc.get('apiVersion')!r}", CALICO_API_VERSION)
    namespace, name = _metadata(f, doc, kind, default_namespace)
    f.policy = name if namespace is None else f"{namespace}/{name}"
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise f.fail("spec", f"got {type(spec).__name__}", "a mapping")
    raw_action = spec.get("stagedAction", "Set")
    if raw_action in ("Learn", "Ignore"):
        raise f.fail(
            "spec.stagedAction", f"{raw_action} is for Calico's policy recommendations, not for staging", "Set or Delete"
        )
    try:
        action = StagedAction(raw_action)
    except ValueError:
        raise f.fail("spec.stagedAction", f"got {raw_action!r}", "Set or Delete") from None
    enforced: NetworkPolicy | CalicoPolicy | None
    if kind is StagedKind.STAGED_KUBERNETES_NETWORK_POLICY:
        f.mapping(spec, "spec", ["stagedAction", "podSelector", "policyTypes", "ingress", "egress"])
        enforced = _staged_kubernetes(f, doc, spec, action, namespace, source)
        if enforced is not None:
            name = enforced.name
    else:
        enforced = _staged_calico(f, doc, spec, kind, action, namespace, name, source)
    full = dict(doc)
    if namespace is not None:
        full["metadata"] = {**doc["metadata"], "namespace": namespace}
    return StagedPolicy(kind, namespace, name, action, enforced, source, MappingProxyType(full))


#: The kinds with Calico's policy spec: the staged ones and the enforced ones they stand for.
_CALICO_SPEC_KINDS = (
    StagedKind.STAGED_NETWORK_POLICY.value,
    StagedKind.STAGED_GLOBAL_NETWORK_POLICY.value,
    EnforcedKind.CALICO_NETWORK_POLICY.kind,
    EnforcedKind.CALICO_GLOBAL_NETWORK_POLICY.kind,
)


def rename_namespaces(manifest: Mapping[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    """A policy of Calico's spec (StagedNetworkPolicy, StagedGlobalNetworkPolicy, or
    the ``projectcalico.org/v3`` NetworkPolicy or GlobalNetworkPolicy that enforces
    one) for a cluster whose namespaces have other names (the existing backend):
    ``metadata.namespace`` and every value a selector compares with a namespace's
    name go through ``rename``. A StagedKubernetesNetworkPolicy has a NetworkPolicy's
    spec and is translated as one (``harness.kube.naming``)."""
    if manifest.get("apiVersion") != CALICO_API_VERSION or manifest.get("kind") not in _CALICO_SPEC_KINDS:
        raise HarnessError(
            f"rename_namespaces takes a {CALICO_API_VERSION} policy of Calico's spec, not "
            f"{manifest.get('apiVersion')!r} {manifest.get('kind')!r}"
        )
    out = copy.deepcopy(dict(manifest))
    meta = out.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
        meta["namespace"] = rename(meta["namespace"])
    spec = out.get("spec")
    if not isinstance(spec, dict):
        return out

    def rewrite(holder: dict[str, Any], key: str, keys: frozenset[str]) -> None:
        text = holder.get(key)
        if not isinstance(text, str) or not text:
            return
        try:
            selector = parse_calico_selector(text)
        except CalicoSelectorError:
            return  # rejected when the policy was read; nothing to translate
        renamed = selector.with_values(keys, rename)
        if renamed.root != selector.root:
            holder[key] = str(renamed)

    rewrite(spec, "selector", ENDPOINT_NAMESPACE_KEYS)
    rewrite(spec, "namespaceSelector", NAMESPACE_NAME_KEYS)
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for side in ("source", "destination"):
                entity = rule.get(side) if isinstance(rule, dict) else None
                if isinstance(entity, dict):
                    rewrite(entity, "selector", ENDPOINT_NAMESPACE_KEYS)
                    rewrite(entity, "namespaceSelector", NAMESPACE_NAME_KEYS)
    return out


def check_unique(staged: Iterable[StagedPolicy]) -> None:
    """Two staged objects of one kind and name would be one object on a cluster."""
    seen: dict[tuple[StagedKind, str | None, str], StagedPolicy] = {}
    for policy in staged:
        key = (policy.kind, policy.namespace, policy.name)
        if key in seen:
            raise PolicyError(
                policy.source, policy.ref, "metadata.name", f"given twice (also in {seen[key].source})", kind=policy.kind.value
            )
        seen[key] = policy
