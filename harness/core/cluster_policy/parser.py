"""Validate ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy
manifests as the API server does with the network-policy-api CRDs installed.

The rules come from the generated CRDs (config/crd/{standard,experimental}/ of
kubernetes-sigs/network-policy-api: v0.2.0 for v1alpha2, v0.1.8 for v1alpha1):
their OpenAPI schema (types, enums, minimum/maximum, minItems/maxItems,
maxLength, patterns, min/maxProperties for "exactly one of", required fields,
``x-kubernetes-list-type: set``, defaults) and their CEL
``x-kubernetes-validations``. Before validating, the API server drops fields set
to null, and it rejects unknown fields under strict field validation (kubectl's
default); so does this parser.

Two things the CRDs let through are refused here on purpose, because no
implementation can evaluate them: label selectors that are not valid label
selectors (the CRD schema only checks their types, so ``operator: Equals`` is
stored) and, in v1alpha1, a protocol other than TCP, UDP or SCTP (a free string
in that schema). docs/cluster-policies.md lists both.

The experimental channel (the default) is a superset of the standard one: it
adds the ``nodes`` and ``domainNames`` peers, v1alpha1's ``namedPort``, and the CEL
rule that forbids named ports next to those peers. Whether a backend can enforce
what the API accepts is a separate question: :mod:`harness.core.cluster_policy.support`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.cluster_policy.cidr import parse_cidr
from harness.core.cluster_policy.objects import (
    Action,
    ClusterPeer,
    ClusterPolicy,
    ClusterPolicyKind,
    ClusterPort,
    ClusterRule,
    PeerForm,
    PodSet,
    Tier,
)
from harness.core.errors import PolicyError, describe_value
from harness.core.metadata import check_metadata
from harness.core.selectors import LabelSelector, SelectorSyntaxError, parse_selector
from harness.core.topology import Protocol, is_dns_subdomain


class Channel(enum.Enum):
    """Which CRD bundle the cluster has installed."""

    STANDARD = "standard"
    EXPERIMENTAL = "experimental"


#: The ``kind`` values this parser takes.
CLUSTER_POLICY_KINDS = frozenset(kind.value for kind in ClusterPolicyKind)

#: The DomainName pattern of the CRDs, as written there (``A-z`` included).
_DOMAIN_NAME = re.compile(r"(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?")
_SELECTOR_NOTE = "the CRD schema only checks the types of a selector, but no implementation can evaluate an invalid one"


@dataclass(frozen=True)
class _Version:
    """What differs between the two API versions and the three kinds."""

    kind: ClusterPolicyKind
    #: maxItems of ingress/egress, of from/to, of protocols/ports.
    max_rules: int
    max_peers: int
    max_ports: int
    ports_key: str
    actions: Mapping[str, Action]
    egress_forms: tuple[PeerForm, ...]
    #: v1alpha1 requires pods.namespaceSelector; v1alpha2 defaults it to {}.
    pods_namespace_required: bool
    #: The field of a named port, and whether it is in the standard channel.
    named_port_key: str
    named_port_standard: bool

    def cel_named_port_message(self) -> str:
        forms = "networks/nodes" if PeerForm.DOMAIN_NAMES not in self.egress_forms else "networks/nodes/domainNames"
        return f"{forms} peer cannot be set with namedPorts since there are no namedPorts for {forms}"


_ALL_EGRESS = (PeerForm.NAMESPACES, PeerForm.PODS, PeerForm.NODES, PeerForm.NETWORKS, PeerForm.DOMAIN_NAMES)
_EXPERIMENTAL_FORMS = frozenset({PeerForm.NODES, PeerForm.DOMAIN_NAMES})

_VERSIONS = {
    ClusterPolicyKind.CLUSTER_NETWORK_POLICY: _Version(
        ClusterPolicyKind.CLUSTER_NETWORK_POLICY,
        25,
        25,
        25,
        "protocols",
        {"Accept": Action.ACCEPT, "Deny": Action.DENY, "Pass": Action.PASS},
        _ALL_EGRESS,
        False,
        "destinationNamedPort",
        True,
    ),
    ClusterPolicyKind.ADMIN_NETWORK_POLICY: _Version(
        ClusterPolicyKind.ADMIN_NETWORK_POLICY,
        100,
        100,
        100,
        "ports",
        {"Allow": Action.ACCEPT, "Deny": Action.DENY, "Pass": Action.PASS},
        _ALL_EGRESS,
        True,
        "namedPort",
        False,
    ),
    ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY: _Version(
        ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY,
        100,
        100,
        100,
        "ports",
        {"Allow": Action.ACCEPT, "Deny": Action.DENY},
        (PeerForm.NAMESPACES, PeerForm.PODS, PeerForm.NODES, PeerForm.NETWORKS),
        True,
        "namedPort",
        False,
    ),
}


def _kind_of(manifest: Mapping[Any, Any]) -> ClusterPolicyKind | None:
    kind = manifest.get("kind")
    return ClusterPolicyKind(kind) if isinstance(kind, str) and kind in CLUSTER_POLICY_KINDS else None


def is_cluster_policy(manifest: object) -> bool:
    """Whether a manifest is of one of the cluster-scoped kinds (whatever else it holds)."""
    return isinstance(manifest, Mapping) and _kind_of(manifest) is not None


class _Parser:
    def __init__(self, source: str, kind: ClusterPolicyKind, name: str, channel: Channel) -> None:
        self.source = source
        self.kind = kind
        self.name = name
        self.channel = channel
        self.version = _VERSIONS[kind]

    # -- the schema's building blocks ----------------------------------------------------

    def fail(self, path: str, message: str, expected: str = "") -> PolicyError:
        return PolicyError(self.source, self.name, path, message, expected, kind=self.kind.value)

    def fields(self, raw: object, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        """A mapping with only ``allowed`` keys, nulls dropped (the API server prunes
        them), ``required`` ones present."""
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"got {describe_value(raw)}", "a mapping")
        for key in raw:
            if key not in allowed:
                raise self.fail(_join(path, str(key)), "unknown field", "one of " + ", ".join(allowed))
        present = {str(key): value for key, value in raw.items() if value is not None}
        for key in required:
            if key not in present:
                raise self.fail(_join(path, key), "required field is missing")
        return present

    def one_of(self, raw: object, path: str, allowed: tuple[str, ...]) -> tuple[str, Any]:
        """``minProperties: 1`` + ``maxProperties: 1``: exactly one field set."""
        present = self.fields(raw, path, allowed)
        if len(present) != 1:
            got = " and ".join(present) if present else "none"
            raise self.fail(path, f"exactly one field must be set, got {got}", "one of " + ", ".join(allowed))
        key, value = next(iter(present.items()))
        return key, value

    def items(self, raw: object, path: str, minimum: int, maximum: int) -> list[Any]:
        if not isinstance(raw, list):
            raise self.fail(path, f"got {describe_value(raw)}", "a list")
        if len(raw) < minimum:
            raise self.fail(path, f"{len(raw)} items, at least {minimum} required")
        if len(raw) > maximum:
            raise self.fail(path, f"{len(raw)} items, at most {maximum} allowed")
        return raw

    def string(self, raw: object, path: str, expected: str = "a string") -> str:
        if not isinstance(raw, str):
            raise self.fail(path, f"got {describe_value(raw)}", expected)
        return raw

    def integer(self, raw: object, path: str, low: int, high: int) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.fail(path, f"got {describe_value(raw)}", f"a whole number from {low} to {high}")
        if not low <= raw <= high:
            raise self.fail(path, f"{raw} is outside {low}-{high}", f"a whole number from {low} to {high}")
        return raw

    def selector(self, raw: object, path: str) -> LabelSelector:
        try:
            return parse_selector(raw)
        except SelectorSyntaxError as err:
            expected = f"{err.expected}; {_SELECTOR_NOTE}" if err.expected else _SELECTOR_NOTE
            raise self.fail(_join(path, err.field), err.message, expected) from None

    def experimental(self, path: str, what: str) -> None:
        if self.channel is Channel.STANDARD:
            raise self.fail(path, f"unknown field: {what} is in the experimental channel of the CRDs only", "the standard fields")

    # -- selections and peers ----------------------------------------------------------

    def pod_set(self, key: str, raw: object, path: str) -> PodSet:
        """The ``namespaces`` or ``pods`` form of a subject or a peer."""
        if key == "namespaces":
            return PodSet(self.selector(raw, path))
        required = ("namespaceSelector", "podSelector") if self.version.pods_namespace_required else ("podSelector",)
        pods = self.fields(raw, path, ("namespaceSelector", "podSelector"), required)
        return PodSet(
            self.selector(pods.get("namespaceSelector", {}), f"{path}.namespaceSelector"),
            self.selector(pods["podSelector"], f"{path}.podSelector"),
        )

    def peer(self, raw: object, path: str, forms: tuple[PeerForm, ...]) -> ClusterPeer:
        key, value = self.one_of(raw, path, tuple(form.value for form in forms))
        form = PeerForm(key)
        where = f"{path}.{key}"
        if form in _EXPERIMENTAL_FORMS:
            self.experimental(where, f"the {key} peer")
        if form in (PeerForm.NAMESPACES, PeerForm.PODS):
            return ClusterPeer(form, pods=self.pod_set(key, value, where))
        if form is PeerForm.NODES:
            return ClusterPeer(form, nodes=self.selector(value, where))
        entries = self.set_items(value, where)
        if form is PeerForm.NETWORKS:
            networks = []
            for i, entry in enumerate(entries):
                text = self.string(entry, f"{where}[{i}]", "a CIDR such as 10.0.0.0/8 or fd00::/8")
                if len(text) > 43:
                    raise self.fail(f"{where}[{i}]", f"{len(text)} characters, at most 43 allowed", "a CIDR")
                network = parse_cidr(text)
                if network is None:
                    raise self.fail(
                        f"{where}[{i}]", f"Invalid CIDR format provided: {text!r}", "a CIDR such as 10.0.0.0/8 or fd00::/8"
                    )
                networks.append(network)
            return ClusterPeer(form, networks=tuple(networks))
        names = []
        for i, entry in enumerate(entries):
            text = self.string(entry, f"{where}[{i}]", "a domain name such as example.com or *.example.com")
            if not _DOMAIN_NAME.fullmatch(text):
                raise self.fail(
                    f"{where}[{i}]", f"{text!r} is not a domain name", "a domain name such as example.com or *.example.com"
                )
            names.append(text)
        return ClusterPeer(form, domain_names=tuple(names))

    def set_items(self, raw: object, path: str) -> list[Any]:
        """``minItems: 1``, ``maxItems: 25``, ``x-kubernetes-list-type: set``."""
        entries = self.items(raw, path, 1, 25)
        for i, entry in enumerate(entries):
            if isinstance(entry, str | int) and entries.index(entry) < i:
                raise self.fail(f"{path}[{i}]", f"duplicate value {entry!r}", "each value once (the list is a set)")
        return entries

    # -- ports -----------------------------------------------------------------------

    def port_range(self, raw: object, path: str, protocol: Protocol) -> ClusterPort:
        allowed = ("start", "end") if self.kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY else ("protocol", "start", "end")
        fields = self.fields(raw, path, allowed, ("start", "end"))
        start = self.integer(fields["start"], f"{path}.start", 1, 65535)
        end = self.integer(fields["end"], f"{path}.end", 1, 65535)
        # v1alpha2 only: v1alpha1's PortRange has no such rule (start > end then
        # matches no port).
        if self.kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY and not start < end:
            raise self.fail(path, "Start port must be less than End port", f"start below end, got {start} and {end}")
        return ClusterPort(protocol, start, end)

    def v1alpha1_protocol(self, fields: Mapping[str, Any], path: str) -> Protocol:
        raw = fields.get("protocol", "TCP")  # +kubebuilder:default=TCP
        text = self.string(raw, f"{path}.protocol", "TCP, UDP or SCTP")
        try:
            return Protocol(text)
        except ValueError:
            raise self.fail(
                f"{path}.protocol",
                f"unknown protocol {text!r}",
                "TCP, UDP or SCTP (the CRD takes any string here, but these are the protocols an implementation matches)",
            ) from None

    def port(self, raw: object, path: str) -> ClusterPort:
        named = self.version.named_port_key
        if self.kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
            key, value = self.one_of(raw, path, ("tcp", "udp", "sctp", named))
        else:
            key, value = self.one_of(raw, path, ("portNumber", named, "portRange"))
        where = f"{path}.{key}"
        if key == named:
            if not self.version.named_port_standard:
                self.experimental(where, f"{named}")
            # The schema has no pattern here: a name no container port has matches nothing.
            return ClusterPort(None, name=self.string(value, where, "a container port name such as http"))
        if key in ("tcp", "udp", "sctp"):
            protocol = Protocol(key.upper())
            attributes = self.fields(value, where, ("destinationPort",))
            if not attributes:
                raise self.fail(where, "at least one field must be set", "destinationPort")
            number_key, number = self.one_of(attributes["destinationPort"], f"{where}.destinationPort", ("number", "range"))
            port_path = f"{where}.destinationPort.{number_key}"
            if number_key == "range":
                return self.port_range(number, port_path, protocol)
            port = self.integer(number, port_path, 1, 65535)
            return ClusterPort(protocol, port, port)
        if key == "portRange":
            fields = self.fields(value, where, ("protocol", "start", "end"))
            return self.port_range(fields, where, self.v1alpha1_protocol(fields, where))
        fields = self.fields(value, where, ("protocol", "port"), ("port",))
        port = self.integer(fields["port"], f"{where}.port", 1, 65535)
        return ClusterPort(self.v1alpha1_protocol(fields, where), port, port)

    # -- rules -------------------------------------------------------------------------

    def rules(self, raw: object, path: str, peer_key: str, forms: tuple[PeerForm, ...]) -> tuple[ClusterRule, ...]:
        version = self.version
        rules = []
        for i, item in enumerate(self.items(raw, path, 0, version.max_rules)):
            where = f"{path}[{i}]"
            fields = self.fields(item, where, ("name", "action", peer_key, version.ports_key), ("action", peer_key))
            name = self.string(fields.get("name", ""), f"{where}.name", "a rule name")
            if len(name) > 100:
                raise self.fail(f"{where}.name", f"{len(name)} characters, at most 100 allowed", "a shorter rule name")
            action_word = self.string(fields["action"], f"{where}.action", " or ".join(version.actions))
            if action_word not in version.actions:
                raise self.fail(f"{where}.action", f"unsupported value {action_word!r}", " or ".join(version.actions))
            peers = tuple(
                self.peer(p, f"{where}.{peer_key}[{j}]", forms)
                for j, p in enumerate(self.items(fields[peer_key], f"{where}.{peer_key}", 1, version.max_peers))
            )
            ports = None
            if version.ports_key in fields:
                ports_path = f"{where}.{version.ports_key}"
                entries = self.items(fields[version.ports_key], ports_path, 1, version.max_ports)
                ports = tuple(self.port(p, f"{ports_path}[{j}]") for j, p in enumerate(entries))
            if peer_key == "to" and self.channel is Channel.EXPERIMENTAL and ports is not None:
                # The experimental CEL rule on egress rules.
                no_named_ports = (PeerForm.NETWORKS, PeerForm.NODES, PeerForm.DOMAIN_NAMES)
                if any(p.form in no_named_ports for p in peers) and any(p.name is not None for p in ports):
                    raise self.fail(where, version.cel_named_port_message(), "named ports with pods or namespaces peers only")
            rules.append(ClusterRule(version.actions[action_word], peers, ports, name))
        return tuple(rules)


def parse_cluster_policy(manifest: object, source: str = "<inline>", channel: Channel = Channel.EXPERIMENTAL) -> ClusterPolicy:
    """Validate one ClusterNetworkPolicy (v1alpha2), AdminNetworkPolicy or
    BaselineAdminNetworkPolicy (v1alpha1) manifest and return it typed.

    Raises :class:`PolicyError` (with ``kind`` set) naming ``source``, the policy
    and the field path.
    """
    name_hint = "<unnamed>"
    kind_hint = ClusterPolicyKind.CLUSTER_NETWORK_POLICY
    if isinstance(manifest, Mapping):
        meta = manifest.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            name_hint = meta["name"]
        kind_hint = _kind_of(manifest) or kind_hint
    p = _Parser(source, kind_hint, name_hint, channel)
    if not isinstance(manifest, Mapping):
        raise p.fail("", f"got {describe_value(manifest)}", "a policy manifest (a mapping)")
    top = p.fields(manifest, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    if _kind_of(top) is None:
        raise p.fail("kind", f"got {describe_value(top.get('kind'))}", ", ".join(sorted(CLUSTER_POLICY_KINDS)))
    kind = kind_hint
    if top.get("apiVersion") != kind.api_version:
        raise p.fail("apiVersion", f"got {describe_value(top.get('apiVersion'))}", f"{kind.api_version} for {kind.value}")
    if "metadata" not in top:
        raise p.fail("metadata", "required field is missing", "a mapping with name")
    raw_meta = top["metadata"]
    meta = p.fields(raw_meta, "metadata", tuple(map(str, raw_meta)) if isinstance(raw_meta, Mapping) else (), ("name",))
    name = meta["name"]
    if not is_dns_subdomain(name):
        raise p.fail("metadata.name", f"{name!r} is not a valid name", "a lowercase DNS subdomain such as deny-internet")
    check_metadata(meta, p.fail)
    # metadata.namespace, if given, is cleared by the API server: the kinds are cluster-scoped.
    if kind is ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY and name != "default":
        # The CRD's CEL rule on the whole object.
        raise p.fail(
            "metadata.name",
            'Only one baseline admin network policy with metadata.name="default" can be created in the cluster',
            "the name default",
        )
    if "spec" not in top:
        raise p.fail("spec", "required field is missing")
    version = p.version
    if kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
        spec = p.fields(
            top["spec"], "spec", ("tier", "priority", "subject", "ingress", "egress"), ("tier", "priority", "subject")
        )
        tier_word = p.string(spec["tier"], "spec.tier", "Admin or Baseline")
        try:
            tier = Tier(tier_word)
        except ValueError:
            raise p.fail("spec.tier", f"unsupported value {tier_word!r}", "Admin or Baseline") from None
        priority = p.integer(spec["priority"], "spec.priority", 0, 1000)
    elif kind is ClusterPolicyKind.ADMIN_NETWORK_POLICY:
        spec = p.fields(top["spec"], "spec", ("priority", "subject", "ingress", "egress"), ("priority", "subject"))
        tier = Tier.ADMIN
        priority = p.integer(spec["priority"], "spec.priority", 0, 1000)
    else:
        spec = p.fields(top["spec"], "spec", ("subject", "ingress", "egress"), ("subject",))
        tier, priority = Tier.BASELINE, 0
    subject_key, subject_raw = p.one_of(spec["subject"], "spec.subject", ("namespaces", "pods"))
    subject = p.pod_set(subject_key, subject_raw, f"spec.subject.{subject_key}")
    ingress = p.rules(spec.get("ingress", []), "spec.ingress", "from", (PeerForm.NAMESPACES, PeerForm.PODS))
    egress = p.rules(spec.get("egress", []), "spec.egress", "to", version.egress_forms)
    return ClusterPolicy(kind, name, tier, priority, subject, ingress, egress, source, dict(manifest))


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}.{key}" if path else key
