"""The reference model, one NetworkPolicy v1 rule at a time.

Every test builds a small topology, parses real manifests with ``parse_policy`` and
asserts concrete cells of the model's matrix. The upstream e2e layout is used where
nothing else is needed: namespaces x, y, z labelled ``ns: <name>``, pods a, b, c in
each labelled ``pod: <name>``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.addressing import plan_addresses
from harness.core.matrix import Cell, CellSet, Observation, Outcome
from harness.core.policy import NetworkPolicy, PolicyType
from harness.core.selectors import LabelSelector, Operator, Requirement
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.topology import (
    NAMESPACE_NAME_LABEL,
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    Topology,
)
from harness.model import ReferenceModel
from tests.manifests import netpol

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
SERVED = (
    PortSpec(80, Protocol.TCP),
    PortSpec(81, Protocol.TCP),
    PortSpec(53, Protocol.TCP),
    PortSpec(53, Protocol.UDP),
)
ALL_PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in PODS)


def match(**labels: str) -> dict[str, Any]:
    """A label selector with matchLabels only."""
    return {"matchLabels": labels}


def pods_peer(**labels: str) -> dict[str, Any]:
    return {"podSelector": match(**labels)}


def ns_peer(**labels: str) -> dict[str, Any]:
    return {"namespaceSelector": match(**labels)}


def grid_topology(externals: Iterable[ExternalHost] = ()) -> Topology:
    return Topology(
        tuple(NamespaceSpec(ns, {"ns": ns}) for ns in NAMESPACES),
        tuple(PodSpec(ns, p, {"pod": p}, SERVED) for ns in NAMESPACES for p in PODS),
        tuple(externals),
    )


def build(topology: Topology, *policies: NetworkPolicy, settings: ImplementationSettings | None = None) -> ReferenceModel:
    return ReferenceModel(topology, policies, plan_addresses(topology), settings)


def sources_allowed_to(model: ReferenceModel, destination: str, port: str) -> set[str]:
    """Every pod (other than the destination itself) that may reach ``destination``."""
    return {p.id for p in model.pods if p.id != destination and model.allowed(p.id, destination, port)}


def destinations_allowed_from(model: ReferenceModel, source: str, port: str) -> set[str]:
    return {d.id for d in model.destinations if d.id != source and model.allowed(source, d.id, port)}


def others(*excluded: str) -> set[str]:
    return set(ALL_PODS) - set(excluded)


DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}


# -- no policy ---------------------------------------------------------------------------


def test_without_policies_every_cell_is_allowed() -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(443),))
    model = build(grid_topology([ext]))
    for port in ("80/TCP", "81/TCP", "53/TCP", "53/UDP", "443/TCP"):
        for src in ALL_PODS:
            for dst in (*ALL_PODS, "api"):
                assert model.allowed(src, dst, port) is True, (src, dst, port)
    assert not model.ingress_isolated.any()
    assert not model.egress_isolated.any()


# -- isolation per direction -------------------------------------------------------------


def test_ingress_policy_isolates_ingress_only() -> None:
    deny = netpol("x", "deny-a", {"podSelector": match(pod="a"), "policyTypes": ["Ingress"]})
    model = build(grid_topology(), deny)
    assert sources_allowed_to(model, "x/a", "80/TCP") == set()
    assert model.allowed("y/b", "x/a", "53/UDP") is False
    # x/a still sends anywhere, and the other pods of x are not isolated.
    assert destinations_allowed_from(model, "x/a", "80/TCP") == others("x/a")
    assert sources_allowed_to(model, "x/b", "80/TCP") == others("x/b")


def test_egress_policy_isolates_egress_only() -> None:
    deny = netpol("x", "deny-a", {"podSelector": match(pod="a"), "policyTypes": ["Egress"]})
    model = build(grid_topology(), deny)
    assert destinations_allowed_from(model, "x/a", "80/TCP") == set()
    assert model.allowed("x/a", "x/b", "53/UDP") is False
    # Everybody still reaches x/a.
    assert sources_allowed_to(model, "x/a", "80/TCP") == others("x/a")
    assert model.allowed("z/c", "x/a", "53/UDP") is True


# -- policyTypes defaulting --------------------------------------------------------------


def test_policy_types_default_to_ingress_when_only_ingress_rules() -> None:
    policy = netpol(
        "x",
        "a-from-b",
        {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="b")]}]},
    )
    assert policy.policy_types == {PolicyType.INGRESS}
    model = build(grid_topology(), policy)
    assert model.allowed("x/b", "x/a", "80/TCP") is True
    assert model.allowed("x/c", "x/a", "80/TCP") is False
    assert model.allowed("y/b", "x/a", "80/TCP") is False
    # Egress of x/a untouched.
    assert destinations_allowed_from(model, "x/a", "81/TCP") == others("x/a")


def test_policy_types_default_to_both_when_egress_rules_present() -> None:
    # Egress rules without policyTypes: Ingress is defaulted too, so the pod
    # becomes ingress-isolated with no ingress rule (deny all ingress).
    policy = netpol(
        "x",
        "a-to-b",
        {"podSelector": match(pod="a"), "egress": [{"to": [pods_peer(pod="b")]}]},
    )
    assert policy.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}
    model = build(grid_topology(), policy)
    assert destinations_allowed_from(model, "x/a", "80/TCP") == {"x/b"}
    assert sources_allowed_to(model, "x/a", "80/TCP") == set()
    assert model.allowed("x/b", "x/a", "80/TCP") is False


def test_explicit_egress_type_without_rules_denies_egress_and_leaves_ingress() -> None:
    policy = netpol("x", "deny-egress-a", {"podSelector": match(pod="a"), "policyTypes": ["Egress"]})
    assert policy.policy_types == {PolicyType.EGRESS}
    model = build(grid_topology(), policy)
    assert destinations_allowed_from(model, "x/a", "80/TCP") == set()
    assert sources_allowed_to(model, "x/a", "80/TCP") == others("x/a")


def test_empty_policy_types_list_is_defaulted_like_absent() -> None:
    # SetDefaults_NetworkPolicy defaults policyTypes when len(policyTypes) == 0, so an
    # explicit empty list means Ingress (plus Egress when egress rules exist).
    policy = netpol("x", "deny", {"podSelector": {}, "policyTypes": []})
    assert policy.policy_types == {PolicyType.INGRESS}
    model = build(grid_topology(), policy)
    assert model.allowed("y/a", "x/a", "80/TCP") is False
    assert model.allowed("x/a", "y/a", "80/TCP") is True


# -- union -------------------------------------------------------------------------------


def test_policies_selecting_the_same_pod_are_a_union() -> None:
    from_b = netpol("x", "from-b", {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="b")]}]})
    from_y = netpol("x", "from-y", {"podSelector": {}, "ingress": [{"from": [ns_peer(ns="y")]}]})
    model = build(grid_topology(), from_b, from_y)
    assert sources_allowed_to(model, "x/a", "80/TCP") == {"x/b", "y/a", "y/b", "y/c"}
    # x/b is only selected by from-y.
    assert sources_allowed_to(model, "x/b", "80/TCP") == {"y/a", "y/b", "y/c"}


def test_union_across_ports_of_two_policies() -> None:
    p80 = netpol(
        "x", "b-80", {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="b")], "ports": [{"port": 80}]}]}
    )
    p81 = netpol(
        "x", "b-81", {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="b")], "ports": [{"port": 81}]}]}
    )
    model = build(grid_topology(), p80, p81)
    assert model.allowed("x/b", "x/a", "80/TCP") is True
    assert model.allowed("x/b", "x/a", "81/TCP") is True
    assert model.allowed("x/b", "x/a", "53/TCP") is False
    assert model.allowed("x/b", "x/a", "53/UDP") is False
    assert model.allowed("x/c", "x/a", "80/TCP") is False


def test_peers_and_ports_pair_within_a_rule_only() -> None:
    policy = netpol(
        "x",
        "two-rules",
        {
            "podSelector": match(pod="a"),
            "ingress": [
                {"from": [pods_peer(pod="b")], "ports": [{"port": 80}]},
                {"from": [pods_peer(pod="c")], "ports": [{"port": 81}]},
            ],
        },
    )
    model = build(grid_topology(), policy)
    assert model.allowed("x/b", "x/a", "80/TCP") is True
    assert model.allowed("x/b", "x/a", "81/TCP") is False
    assert model.allowed("x/c", "x/a", "81/TCP") is True
    assert model.allowed("x/c", "x/a", "80/TCP") is False


# -- namespaces --------------------------------------------------------------------------


def test_policy_selects_pods_of_its_own_namespace_only() -> None:
    model = build(grid_topology(), netpol("x", "deny", DENY_INGRESS))
    for pod in ("x/a", "x/b", "x/c"):
        assert sources_allowed_to(model, pod, "80/TCP") == set()
    for pod in ("y/a", "z/c"):
        assert sources_allowed_to(model, pod, "80/TCP") == others(pod)
    assert model.ingress_isolated.tolist() == [True] * 3 + [False] * 6


def test_policy_in_an_undeclared_namespace_selects_nothing() -> None:
    model = build(grid_topology(), netpol("w", "deny", DENY_INGRESS))
    assert not model.ingress_isolated.any()
    assert model.allowed("y/a", "x/a", "80/TCP") is True


def test_pod_selector_alone_means_same_namespace() -> None:
    policy = netpol("y", "from-b", {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="b")]}]})
    model = build(grid_topology(), policy)
    assert sources_allowed_to(model, "y/a", "80/TCP") == {"y/b"}
    assert model.allowed("x/b", "y/a", "80/TCP") is False
    assert model.allowed("z/b", "y/a", "80/TCP") is False


def test_namespace_selector_alone_means_every_pod_of_matching_namespaces() -> None:
    policy = netpol("y", "from-x", {"podSelector": match(pod="a"), "ingress": [{"from": [ns_peer(ns="x")]}]})
    model = build(grid_topology(), policy)
    # The policy's own namespace is not matched by a namespaceSelector for x.
    assert sources_allowed_to(model, "y/a", "80/TCP") == {"x/a", "x/b", "x/c"}
    assert model.allowed("y/b", "y/a", "80/TCP") is False


def test_both_selectors_in_one_peer_are_anded() -> None:
    policy = netpol(
        "y",
        "from-x-b",
        {
            "podSelector": match(pod="a"),
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": match(pod="b")},
                    ]
                }
            ],
        },
    )
    model = build(grid_topology(), policy)
    assert sources_allowed_to(model, "y/a", "80/TCP") == {"x/b"}
    assert model.allowed("y/b", "y/a", "80/TCP") is False
    assert model.allowed("x/c", "y/a", "80/TCP") is False


def test_selectors_as_two_peers_are_ored() -> None:
    policy = netpol(
        "y",
        "from-x-or-b",
        {
            "podSelector": match(pod="a"),
            "ingress": [
                {
                    "from": [
                        ns_peer(ns="x"),
                        pods_peer(pod="b"),
                    ]
                }
            ],
        },
    )
    model = build(grid_topology(), policy)
    assert sources_allowed_to(model, "y/a", "80/TCP") == {"x/a", "x/b", "x/c", "y/b"}
    assert model.allowed("z/b", "y/a", "80/TCP") is False


def test_empty_namespace_selector_matches_every_namespace() -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80),))
    ingress = netpol("y", "from-all", {"podSelector": match(pod="a"), "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    b_anywhere = netpol(
        "y",
        "from-b-anywhere",
        {"podSelector": match(pod="b"), "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": match(pod="b")}]}]},
    )
    egress = netpol(
        "z",
        "to-all-pods",
        {"podSelector": match(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}]}]},
    )
    model = build(grid_topology([ext]), ingress, b_anywhere, egress)
    assert sources_allowed_to(model, "y/a", "80/TCP") == others("y/a")
    assert sources_allowed_to(model, "y/b", "80/TCP") == {"x/b", "z/b"}
    # Every pod, but not what is outside the cluster.
    assert destinations_allowed_from(model, "z/a", "80/TCP") == others("z/a", "y/b")  # y/b admits pod=b only
    assert model.allowed("z/a", "api", "80/TCP") is False
    assert model.allowed("z/b", "api", "80/TCP") is True


def test_null_namespace_selector_is_the_same_as_absent() -> None:
    # JSON null leaves the pointer unset on the API server: the peer is a podSelector
    # alone, so it stays in the policy's namespace.
    policy = netpol(
        "y",
        "from-b",
        {"podSelector": match(pod="a"), "ingress": [{"from": [{"podSelector": match(pod="b"), "namespaceSelector": None}]}]},
    )
    model = build(grid_topology(), policy)
    assert sources_allowed_to(model, "y/a", "80/TCP") == {"y/b"}
    assert model.allowed("x/b", "y/a", "80/TCP") is False


def test_namespace_name_label_is_always_there() -> None:
    policy = netpol(
        "y",
        "from-z-by-name",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "z"}}}]}]},
    )
    model = build(grid_topology(), policy)
    assert sources_allowed_to(model, "y/c", "80/TCP") == {"z/a", "z/b", "z/c"}


# -- label selectors ---------------------------------------------------------------------


def test_match_labels_requires_every_label() -> None:
    topology = Topology(
        (NamespaceSpec("x"),),
        (
            PodSpec("x", "srv", {"role": "srv"}, SERVED),
            PodSpec("x", "both", {"app": "web", "tier": "front"}, SERVED),
            PodSpec("x", "app-only", {"app": "web"}, SERVED),
            PodSpec("x", "other-tier", {"app": "web", "tier": "back"}, SERVED),
        ),
    )
    policy = netpol(
        "x",
        "front-web",
        {
            "podSelector": {"matchLabels": {"role": "srv"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web", "tier": "front"}}}]}],
        },
    )
    model = build(topology, policy)
    assert sources_allowed_to(model, "x/srv", "80/TCP") == {"x/both"}


POD_EXPRESSION_CASES = [
    ("In", ["web"], {"x/web"}),
    ("In", ["web", "db"], {"x/web", "x/db"}),
    ("NotIn", ["web"], {"x/db", "x/bare"}),  # a pod without the key satisfies NotIn
    ("Exists", None, {"x/web", "x/db"}),
    ("DoesNotExist", None, {"x/bare"}),
]


@pytest.mark.parametrize(("operator", "values", "allowed"), POD_EXPRESSION_CASES)
def test_match_expressions_on_pods(operator: str, values: list[str] | None, allowed: set[str]) -> None:
    topology = Topology(
        (NamespaceSpec("x"), NamespaceSpec("y")),
        (
            PodSpec("x", "srv", {"role": "srv"}, SERVED),
            PodSpec("x", "web", {"app": "web"}, SERVED),
            PodSpec("x", "db", {"app": "db"}, SERVED),
            PodSpec("x", "bare", {}, SERVED),
            PodSpec("y", "web", {"app": "web"}, SERVED),
        ),
    )
    expr: dict[str, Any] = {"key": "app", "operator": operator}
    if values is not None:
        expr["values"] = values
    policy = netpol(
        "x",
        "expr",
        {"podSelector": {"matchLabels": {"role": "srv"}}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [expr]}}]}]},
    )
    model = build(topology, policy)
    # A podSelector alone stays in x: y/web never gets in.
    assert sources_allowed_to(model, "x/srv", "80/TCP") == allowed


NAMESPACE_EXPRESSION_CASES = [
    ("In", ["prod"], {"prod/c"}),
    ("NotIn", ["prod"], {"dev/c", "bare/c", "t/other"}),
    ("Exists", None, {"prod/c", "dev/c"}),
    ("DoesNotExist", None, {"bare/c", "t/other"}),
]


@pytest.mark.parametrize(("operator", "values", "allowed"), NAMESPACE_EXPRESSION_CASES)
def test_match_expressions_on_namespaces(operator: str, values: list[str] | None, allowed: set[str]) -> None:
    topology = Topology(
        (NamespaceSpec("prod", {"env": "prod"}), NamespaceSpec("dev", {"env": "dev"}), NamespaceSpec("bare"), NamespaceSpec("t")),
        (
            PodSpec("prod", "c", {}, SERVED),
            PodSpec("dev", "c", {}, SERVED),
            PodSpec("bare", "c", {}, SERVED),
            PodSpec("t", "srv", {"role": "srv"}, SERVED),
            PodSpec("t", "other", {}, SERVED),
        ),
    )
    expr: dict[str, Any] = {"key": "env", "operator": operator}
    if values is not None:
        expr["values"] = values
    policy = netpol(
        "t",
        "expr",
        {
            "podSelector": {"matchLabels": {"role": "srv"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [expr]}}]}],
        },
    )
    model = build(topology, policy)
    assert sources_allowed_to(model, "t/srv", "80/TCP") == allowed


def test_match_labels_and_expressions_are_anded() -> None:
    topology = Topology(
        (NamespaceSpec("x"),),
        (
            PodSpec("x", "srv", {"role": "srv"}, SERVED),
            PodSpec("x", "web-v1", {"app": "web", "v": "1"}, SERVED),
            PodSpec("x", "web-v2", {"app": "web", "v": "2"}, SERVED),
            PodSpec("x", "db-v1", {"app": "db", "v": "1"}, SERVED),
        ),
    )
    policy = netpol(
        "x",
        "web-not-v2",
        {
            "podSelector": {"matchLabels": {"role": "srv"}},
            "ingress": [
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchLabels": {"app": "web"},
                                "matchExpressions": [{"key": "v", "operator": "NotIn", "values": ["2"]}],
                            }
                        }
                    ]
                }
            ],
        },
    )
    model = build(topology, policy)
    assert sources_allowed_to(model, "x/srv", "80/TCP") == {"x/web-v1"}


# -- empty and absent rule parts -----------------------------------------------------------


@pytest.mark.parametrize(
    "rule", [{"ports": [{"port": 80}]}, {"from": [], "ports": [{"port": 80}]}], ids=["absent-from", "empty-from"]
)
def test_absent_or_empty_from_matches_every_source(rule: dict[str, Any]) -> None:
    policy = netpol("x", "p", {"podSelector": match(pod="a"), "ingress": [rule]})
    model = build(grid_topology(), policy)
    assert sources_allowed_to(model, "x/a", "80/TCP") == others("x/a")
    assert sources_allowed_to(model, "x/a", "81/TCP") == set()


@pytest.mark.parametrize("rule", [{"ports": [{"port": 80}]}, {"to": [], "ports": [{"port": 80}]}], ids=["absent-to", "empty-to"])
def test_absent_or_empty_to_matches_every_destination_external_too(rule: dict[str, Any]) -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80), PortSpec(81)))
    policy = netpol("x", "p", {"podSelector": match(pod="a"), "policyTypes": ["Egress"], "egress": [rule]})
    model = build(grid_topology([ext]), policy)
    assert destinations_allowed_from(model, "x/a", "80/TCP") == others("x/a") | {"api"}
    assert destinations_allowed_from(model, "x/a", "81/TCP") == set()


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []},
        {"podSelector": {}, "policyTypes": ["Ingress"]},
        {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": None},
    ],
    ids=["empty-ingress", "absent-ingress", "null-ingress"],
)
def test_isolated_without_ingress_rules_denies_all_ingress(spec: dict[str, Any]) -> None:
    model = build(grid_topology(), netpol("x", "deny", spec))
    for pod in ("x/a", "x/b", "x/c"):
        for port in ("80/TCP", "53/UDP"):
            assert sources_allowed_to(model, pod, port) == set()


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": []},
        {"podSelector": {}, "policyTypes": ["Egress"]},
    ],
    ids=["empty-egress", "absent-egress"],
)
def test_isolated_without_egress_rules_denies_all_egress(spec: dict[str, Any]) -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80),))
    model = build(grid_topology([ext]), netpol("x", "deny", spec))
    assert destinations_allowed_from(model, "x/b", "80/TCP") == set()
    assert model.allowed("y/b", "api", "80/TCP") is True


def test_one_empty_ingress_rule_allows_everything() -> None:
    deny = netpol("x", "deny", DENY_INGRESS)
    allow = netpol("x", "allow-all", {"podSelector": match(pod="a"), "ingress": [{}]})
    model = build(grid_topology(), deny, allow)
    for port in ("80/TCP", "81/TCP", "53/TCP", "53/UDP"):
        assert sources_allowed_to(model, "x/a", port) == others("x/a")
        assert sources_allowed_to(model, "x/b", port) == set()


def test_one_empty_egress_rule_allows_everything_external_too() -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80),))
    allow = netpol("x", "allow-all", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})
    model = build(grid_topology([ext]), allow)
    assert destinations_allowed_from(model, "x/a", "80/TCP") == others("x/a") | {"api"}
    assert destinations_allowed_from(model, "x/a", "53/UDP") == others("x/a") | {"api"}


# -- ports -------------------------------------------------------------------------------


def _ports_model(ports: Any, absent: bool = False) -> ReferenceModel:
    rule: dict[str, Any] = {"from": [pods_peer(pod="b")]}
    if not absent:
        rule["ports"] = ports
    policy = netpol("x", "ports", {"podSelector": match(pod="a"), "ingress": [rule]})
    return build(grid_topology(), policy)


def _allowed_ports(model: ReferenceModel, src: str = "x/b", dst: str = "x/a") -> set[str]:
    return {str(p.key) for p in SERVED if model.allowed(src, dst, p.key)}


@pytest.mark.parametrize("absent", [True, False], ids=["absent-ports", "empty-ports"])
def test_absent_or_empty_ports_allow_every_port_and_protocol(absent: bool) -> None:
    model = _ports_model([], absent=absent)
    assert _allowed_ports(model) == {"80/TCP", "81/TCP", "53/TCP", "53/UDP"}
    assert _allowed_ports(model, src="x/c") == set()


def test_port_without_protocol_is_tcp_only() -> None:
    model = _ports_model([{"port": 53}])
    assert _allowed_ports(model) == {"53/TCP"}
    assert model.allowed("x/b", "x/a", "53/UDP") is False


def test_protocol_only_entry_allows_every_port_of_that_protocol() -> None:
    model = _ports_model([{"protocol": "UDP"}])
    assert _allowed_ports(model) == {"53/UDP"}
    assert model.allowed("x/b", "x/a", "5353/UDP") is True
    assert model.allowed("x/b", "x/a", "80/TCP") is False


def test_empty_port_entry_is_every_tcp_port_not_every_protocol() -> None:
    # The API server defaults a NetworkPolicyPort's protocol to TCP, and Calico's
    # converter also makes TCP explicit: {} means every TCP port, UDP stays out.
    model = _ports_model([{}])
    assert _allowed_ports(model) == {"80/TCP", "81/TCP", "53/TCP"}
    assert model.allowed("x/b", "x/a", "53/UDP") is False
    assert model.allowed("x/b", "x/a", "9000/SCTP") is False


def test_several_port_entries_are_ored() -> None:
    model = _ports_model([{"port": 81}, {"port": 53, "protocol": "UDP"}])
    assert _allowed_ports(model) == {"81/TCP", "53/UDP"}


def test_end_port_range_is_inclusive() -> None:
    range_ports = tuple(PortSpec(n) for n in (7999, 8000, 8001, 8002, 8003))
    topology = Topology((NamespaceSpec("x"),), (PodSpec("x", "srv", {}, range_ports), PodSpec("x", "cli", {}, range_ports)))
    policy = netpol("x", "range", {"podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 8002}]}]})
    model = build(topology, policy)
    assert [model.allowed("x/cli", "x/srv", f"{n}/TCP") for n in range(7999, 8004)] == [False, True, True, True, False]
    assert model.allowed("x/cli", "x/srv", "8001/UDP") is False


def test_end_port_range_in_egress() -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(443), PortSpec(444), PortSpec(445)))
    policy = netpol(
        "x", "range", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 443, "endPort": 444}]}]}
    )
    model = build(grid_topology([ext]), policy)
    assert model.allowed("x/a", "api", "443/TCP") is True
    assert model.allowed("x/a", "api", "444/TCP") is True
    assert model.allowed("x/a", "api", "445/TCP") is False


# -- ipBlock -----------------------------------------------------------------------------


def test_ip_block_with_except_for_egress_to_external_hosts() -> None:
    externals = [
        ExternalHost("inside", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(443),)),
        ExternalHost("excepted", ipaddress.IPv4Address("203.0.113.20"), (PortSpec(443),)),
        ExternalHost("outside", ipaddress.IPv4Address("198.51.100.5"), (PortSpec(443),)),
    ]
    policy = netpol(
        "x",
        "egress-range",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.16/28"]}}]}],
        },
    )
    model = build(grid_topology(externals), policy)
    assert model.allowed("x/a", "inside", "443/TCP") is True
    assert model.allowed("x/a", "excepted", "443/TCP") is False
    assert model.allowed("x/a", "outside", "443/TCP") is False
    # Pods are outside 203.0.113.0/24: blocked for x, untouched for y.
    assert model.allowed("x/a", "y/a", "80/TCP") is False
    assert model.allowed("y/a", "outside", "443/TCP") is True


def _ip_block_ingress(matches_pods: bool) -> ReferenceModel:
    topology = grid_topology()
    addresses = plan_addresses(topology)
    x_range = ipaddress.ip_network(f"{addresses['x/a']}/24", strict=False)
    assert addresses["x/c"] in x_range and addresses["y/a"] not in x_range
    policy = netpol(
        "y",
        "from-x-range",
        {
            "podSelector": match(pod="a"),
            "ingress": [{"from": [{"ipBlock": {"cidr": str(x_range), "except": [f"{addresses['x/b']}/32"]}}]}],
        },
    )
    return ReferenceModel(topology, [policy], addresses, ImplementationSettings(ipblock_matches_pods=matches_pods))


def test_ip_block_matches_pod_addresses_when_the_setting_says_so() -> None:
    model = _ip_block_ingress(matches_pods=True)
    assert sources_allowed_to(model, "y/a", "80/TCP") == {"x/a", "x/c"}
    assert model.allowed("x/b", "y/a", "80/TCP") is False


def test_ip_block_never_matches_pods_when_the_setting_says_so() -> None:
    model = _ip_block_ingress(matches_pods=False)
    assert sources_allowed_to(model, "y/a", "80/TCP") == set()


def test_ip_block_egress_to_pods_follows_the_setting() -> None:
    topology = grid_topology()
    addresses = plan_addresses(topology)
    policy = netpol(
        "x",
        "to-z-a",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": f"{addresses['z/a']}/32"}}]}]},
    )
    on = ReferenceModel(topology, [policy], addresses, ImplementationSettings(ipblock_matches_pods=True))
    off = ReferenceModel(topology, [policy], addresses, ImplementationSettings(ipblock_matches_pods=False))
    assert destinations_allowed_from(on, "x/a", "80/TCP") == {"z/a"}
    assert destinations_allowed_from(off, "x/a", "80/TCP") == set()


# -- named ports -------------------------------------------------------------------------


def _named_topology(externals: Iterable[ExternalHost] = ()) -> Topology:
    return Topology(
        (NamespaceSpec("x"), NamespaceSpec("y")),
        (
            PodSpec(
                "x",
                "a",
                {"app": "a"},
                (
                    PortSpec(80, name="http"),
                    PortSpec(8080),
                    PortSpec(53, Protocol.UDP, "dns"),
                    PortSpec(53),
                ),
            ),
            PodSpec("x", "b", {"app": "b"}, (PortSpec(8080, name="http"), PortSpec(80))),
            PodSpec("y", "client", {"app": "client"}, (PortSpec(80),)),
        ),
        tuple(externals),
    )


def test_named_port_resolves_per_destination_pod() -> None:
    policy = netpol("x", "http", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    model = build(_named_topology(), policy)
    assert model.allowed("y/client", "x/a", "80/TCP") is True
    assert model.allowed("y/client", "x/a", "8080/TCP") is False
    assert model.allowed("y/client", "x/b", "8080/TCP") is True
    assert model.allowed("y/client", "x/b", "80/TCP") is False


def test_named_port_with_the_wrong_protocol_matches_nothing() -> None:
    tcp = netpol("x", "dns-tcp", {"podSelector": match(app="a"), "ingress": [{"ports": [{"port": "dns"}]}]})
    model = build(_named_topology(), tcp)
    assert model.allowed("y/client", "x/a", "53/UDP") is False
    assert model.allowed("y/client", "x/a", "53/TCP") is False
    udp = netpol("x", "dns-udp", {"podSelector": match(app="a"), "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]})
    model = build(_named_topology(), udp)
    assert model.allowed("y/client", "x/a", "53/UDP") is True
    assert model.allowed("y/client", "x/a", "53/TCP") is False


def test_named_port_in_egress_resolves_against_the_destination() -> None:
    policy = netpol("y", "egress-http", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]})
    model = build(_named_topology(), policy)
    assert model.allowed("y/client", "x/a", "80/TCP") is True
    assert model.allowed("y/client", "x/b", "80/TCP") is False
    assert model.allowed("y/client", "x/b", "8080/TCP") is True


def test_named_port_never_matches_an_external_host() -> None:
    ext = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80, name="http"),))
    policy = netpol(
        "y",
        "egress-http",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": "http"}]}],
        },
    )
    model = build(_named_topology([ext]), policy)
    assert model.allowed("y/client", "api", "80/TCP") is False
    assert model.allowed("y/client", "x/a", "80/TCP") is True


# -- both sides --------------------------------------------------------------------------


def test_egress_denial_blocks_even_when_the_server_allows() -> None:
    client_deny = netpol("x", "deny-egress", {"podSelector": match(pod="a"), "policyTypes": ["Egress"]})
    server_allow = netpol(
        "y",
        "from-x-a",
        {
            "podSelector": match(pod="b"),
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": match(pod="a")}]}],
        },
    )
    model = build(grid_topology(), client_deny, server_allow)
    assert model.allowed("x/a", "y/b", "80/TCP") is False
    assert model.allowed("x/b", "y/b", "80/TCP") is False  # not allowed by the server
    assert model.allowed("x/b", "y/a", "80/TCP") is True


def test_ingress_and_egress_must_both_allow() -> None:
    egress = netpol(
        "x",
        "a-to-y-80",
        {
            "podSelector": match(pod="a"),
            "policyTypes": ["Egress"],
            "egress": [{"to": [ns_peer(ns="y")], "ports": [{"port": 80}]}],
        },
    )
    ingress_b = netpol(
        "y",
        "b-from-x-a",
        {
            "podSelector": match(pod="b"),
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": match(pod="a")}],
                    "ports": [{"port": 80}, {"port": 81}],
                }
            ],
        },
    )
    deny_c = netpol("y", "deny-c", {"podSelector": match(pod="c"), "policyTypes": ["Ingress"]})
    model = build(grid_topology(), egress, ingress_b, deny_c)
    assert model.allowed("x/a", "y/b", "80/TCP") is True
    assert model.allowed("x/a", "y/b", "81/TCP") is False  # egress side refuses
    assert model.allowed("x/a", "y/c", "80/TCP") is False  # ingress side refuses
    assert model.allowed("x/a", "y/a", "80/TCP") is True  # y/a is not isolated
    assert model.allowed("x/a", "z/a", "80/TCP") is False  # outside the egress rule


# -- self traffic ------------------------------------------------------------------------


def test_self_traffic_allowed_by_default_even_under_deny_all() -> None:
    deny_in = netpol("x", "deny-in", DENY_INGRESS)
    deny_out = netpol("x", "deny-out", DENY_EGRESS)
    model = build(grid_topology(), deny_in, deny_out)
    assert model.allowed("x/a", "x/a", "80/TCP") is True
    assert model.allowed("x/a", "x/a", "53/UDP") is True
    assert model.allowed("x/a", "x/b", "80/TCP") is False


def test_self_traffic_evaluated_by_policy_when_set() -> None:
    settings = ImplementationSettings(self_traffic=SelfTraffic.POLICY)
    denied = build(grid_topology(), netpol("x", "deny-in", DENY_INGRESS), settings=settings)
    assert denied.allowed("x/a", "x/a", "80/TCP") is False
    assert denied.allowed("y/a", "y/a", "80/TCP") is True  # not isolated
    same_ns = netpol("x", "same-ns", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    allowed = build(grid_topology(), same_ns, settings=settings)
    assert allowed.allowed("x/a", "x/a", "80/TCP") is True
    only_b = netpol("x", "only-b", {"podSelector": {}, "ingress": [{"from": [pods_peer(pod="b")]}]})
    model = build(grid_topology(), only_b, settings=settings)
    assert model.allowed("x/a", "x/a", "80/TCP") is False
    assert model.allowed("x/b", "x/b", "80/TCP") is True


# -- relabelling -------------------------------------------------------------------------


def test_relabelled_namespace_changes_selection() -> None:
    policy = netpol(
        "y", "from-team", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}
    )
    before = grid_topology()
    assert sources_allowed_to(build(before, policy), "y/a", "80/TCP") == set()
    after = before.with_namespace_labels("z", {"ns": "z", "team": "blue"})
    assert after.namespace("z").labels[NAMESPACE_NAME_LABEL] == "z"
    assert sources_allowed_to(build(after, policy), "y/a", "80/TCP") == {"z/a", "z/b", "z/c"}


def test_relabelled_pod_changes_peer_and_target_selection() -> None:
    policy = netpol("x", "a-from-b", {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="b")]}]})
    before = grid_topology()
    assert sources_allowed_to(build(before, policy), "x/a", "80/TCP") == {"x/b"}
    peer_moved = before.with_pod_labels("x/c", {"pod": "b"})
    assert sources_allowed_to(build(peer_moved, policy), "x/a", "80/TCP") == {"x/b", "x/c"}
    target_moved = before.with_pod_labels("x/a", {"pod": "gone"})
    assert sources_allowed_to(build(target_moved, policy), "x/a", "80/TCP") == others("x/a")


# -- explain and matrix --------------------------------------------------------------------


def test_explain_names_the_isolating_policies() -> None:
    deny_in = netpol("y", "deny-in", DENY_INGRESS)
    deny_out = netpol("x", "deny-out", {"podSelector": match(pod="a"), "policyTypes": ["Egress"]})
    model = build(grid_topology(), deny_in, deny_out)
    port = PortProtocol.parse("80/TCP")
    assert model.explain("x/b", "z/a", port) == "egress of x/b not isolated; ingress of z/a not isolated"
    assert (
        model.explain("x/b", "y/a", port) == "egress of x/b not isolated; ingress of y/a isolated by y/deny-in, no rule allows it"
    )
    assert model.explain("x/a", "y/c", port) == (
        "egress of x/a isolated by x/deny-out, no rule allows it; ingress of y/c isolated by y/deny-in, no rule allows it"
    )


def test_explain_names_the_rule_peer_and_port_that_admit_a_cell() -> None:
    allow = netpol(
        "y",
        "from-x",
        {
            "podSelector": match(pod="a"),
            "ingress": [
                {"from": [pods_peer(pod="c")], "ports": [{"port": 81}]},
                {
                    "from": [pods_peer(pod="c"), {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "x"}}}],
                    "ports": [{"port": 79}, {"port": 80, "endPort": 90}],
                },
            ],
        },
    )
    model = build(grid_topology(), allow)
    assert model.explain("x/b", "y/a", PortProtocol.parse("80/TCP")) == (
        "egress of x/b not isolated; ingress of y/a admitted by y/from-x ingress[1] "
        "(from[1] namespaceSelector kubernetes.io/metadata.name=x, ports[1] 80-90/TCP)"
    )


def test_explain_lists_every_isolating_policy() -> None:
    p1 = netpol("y", "only-b", {"podSelector": {}, "ingress": [{"from": [pods_peer(pod="b")]}]})
    p2 = netpol("y", "only-c", {"podSelector": match(pod="a"), "ingress": [{"from": [pods_peer(pod="c")]}]})
    model = build(grid_topology(), p1, p2)
    text = model.explain("x/a", "y/a", PortProtocol.parse("80/TCP"))
    assert "y/only-b" in text and "y/only-c" in text


def test_reachability_holds_exactly_the_requested_cells() -> None:
    model = build(grid_topology(), netpol("y", "deny-in", DENY_INGRESS))
    port = PortProtocol.parse("80/TCP")
    cells = [Cell("x/a", "y/a", port), Cell("x/a", "z/a", port)]
    matrix = model.reachability(CellSet.from_cells(cells))
    assert matrix.cells == {cells[0]: Observation(Outcome.BLOCKED), cells[1]: Observation(Outcome.ALLOWED)}


def test_model_refuses_a_destination_without_address() -> None:
    from harness.core.errors import HarnessError

    topology = grid_topology()
    addresses = plan_addresses(topology)
    del addresses["y/b"]
    with pytest.raises(HarnessError, match="y/b"):
        ReferenceModel(topology, [], addresses)


# -- the vectorised selector agrees with LabelSelector.matches -------------------------------

_KEYS = st.sampled_from(["app", "tier", "env"])
_VALUES = st.sampled_from(["a", "b", "c"])
_LABELS = st.dictionaries(_KEYS, _VALUES, max_size=3)


@st.composite
def _selectors(draw: st.DrawFn) -> LabelSelector:
    match_labels = draw(st.dictionaries(_KEYS, _VALUES, max_size=2))
    requirements = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(list(Operator)))
        needs_values = op in (Operator.IN, Operator.NOT_IN)
        values = frozenset(draw(st.sets(_VALUES, min_size=1, max_size=2))) if needs_values else frozenset()
        requirements.append(Requirement(draw(_KEYS), op, values))
    return LabelSelector(match_labels, tuple(requirements))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(pod_labels=st.lists(_LABELS, min_size=1, max_size=6), selector=_selectors())
def test_policy_selection_agrees_with_label_selector(pod_labels: list[dict[str, str]], selector: LabelSelector) -> None:
    pods = tuple(PodSpec("x", f"p{i}", lab, SERVED) for i, lab in enumerate(pod_labels))
    topology = Topology((NamespaceSpec("x"),), pods)
    policy = netpol("x", "sel", {"podSelector": selector.to_manifest(), "policyTypes": ["Ingress"]})
    model = build(topology, policy)
    assert model.ingress_isolated.tolist() == [selector.matches(lab) for lab in pod_labels]
